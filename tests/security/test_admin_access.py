"""Every /admin route, as its own OpenAPI schema lists them, refuses anything but the admin token."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.reliability.results import Recorder
from tests.security.conftest import Secrets


def _operations(stack: Stack) -> list[tuple[str, str, dict[str, Any]]]:
    schema = httpx.get(f"{stack.farebox.base_url}/admin/openapi.json", timeout=10).json()
    ops = [(method.upper(), path, op) for path, methods in schema["paths"].items() for method, op in methods.items()
           if path.startswith("/admin")]
    assert len(ops) >= 15, f"the schema lists only {len(ops)} admin operations"
    return ops


def _body(method: str, path: str, attacker_team: str) -> dict[str, Any] | None:
    """A body that would succeed with the admin token, so a missing check would show as a change."""
    if method == "POST" and path == "/admin/teams":
        return {"name": f"intruder-{uuid.uuid4().hex[:8]}"}
    if path.endswith("/budgets") and method == "POST":
        return {"limit_usd": "1", "period": "daily"}
    if path.startswith("/admin/budgets/") and method == "PATCH":
        return {"limit_usd": "9000000"}
    if path.startswith("/admin/teams/") and method == "PATCH":
        return {"webhook_url": "https://attacker.example/hook"}
    if path.endswith("/keys") and method == "POST":
        return {"name": "intruder"}
    if path.startswith("/admin/models/"):
        return {"team_id": attacker_team}
    return {} if method in ("POST", "PATCH", "PUT") else None


def _fill(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: ids.get(m.group(1), "x"), path)


def test_admin_routes_refuse_everything_but_the_admin_token(
    secure_stack: Stack, service_secrets: Secrets, record_figures: Recorder,
) -> None:
    admin = secure_stack.admin
    victim, _ = admin.team_with_key()
    victim_key = admin.key(victim["id"])
    budget = admin.budget(victim["id"], "10", "daily")
    attacker, attacker_key = admin.team_with_key()
    ids = {"team_id": victim["id"], "key_id": victim_key["id"], "budget_id": budget["id"],
           "model": f"ft:gpt-4o-mini-2024-07-18:victim::{uuid.uuid4().hex[:6]}"}
    admin.http.post(f"/models/{ids['model']}/claim", json={"team_id": victim["id"]}).raise_for_status()
    before = {
        "teams": len(admin.http.get("/teams").json()),
        "keys": admin.http.get(f"/teams/{victim['id']}/keys").json(),
        "budgets": admin.http.get(f"/teams/{victim['id']}/budgets").json(),
        "team": admin.http.get(f"/teams/{victim['id']}").json(),
    }
    credentials = {
        "no token": {},
        "a wrong token": {"Authorization": "Bearer adm_" + uuid.uuid4().hex},
        "a team key": {"Authorization": f"Bearer {attacker_key}"},
        "the victim's own key": {"Authorization": f"Bearer {victim_key['key']}"},
        "the upstream key": {"Authorization": f"Bearer {service_secrets.upstream_key}"},
        "the admin token, Basic": {"Authorization": f"Basic {service_secrets.admin_token}"},
        "the admin token, truncated": {"Authorization": f"Bearer {service_secrets.admin_token[:-1]}"},
        "the admin token, extended": {"Authorization": f"Bearer {service_secrets.admin_token}x"},
        "the admin token as a query": {},  # added to the URL below
        "the admin token as a cookie": {"Cookie": f"token={service_secrets.admin_token}"},
    }
    tried = 0
    for method, path, _ in _operations(secure_stack):
        url = f"{secure_stack.farebox.base_url}{_fill(path, ids)}"
        body = _body(method, path, attacker["id"])
        for name, headers in credentials.items():
            params = {"token": service_secrets.admin_token, "access_token": service_secrets.admin_token} \
                if name == "the admin token as a query" else None
            resp = httpx.request(method, url, headers=headers, json=body, params=params, timeout=10)
            tried += 1
            assert resp.status_code in (401, 403), f"{method} {path} with {name}: {resp.status_code} {resp.text[:200]}"
            error = resp.json()["error"]
            assert error["type"] == "invalid_request_error" and error["code"]
            assert service_secrets.admin_token not in resp.text
    after = {
        "teams": len(admin.http.get("/teams").json()),
        "keys": admin.http.get(f"/teams/{victim['id']}/keys").json(),
        "budgets": admin.http.get(f"/teams/{victim['id']}/budgets").json(),
        "team": admin.http.get(f"/teams/{victim['id']}").json(),
    }
    assert after == before, "a refused call changed something"
    # The same routes do answer the admin token (the refusals above were not 404s in disguise).
    assert admin.http.get(f"/teams/{victim['id']}/standing").status_code == 200
    record_figures(fault="admin routes x wrong credentials", requests=tried, during=tried, ledger_rows=0,
                   operations=len(_operations(secure_stack)), let_in=0, differences=0)


@pytest.mark.parametrize("path", ["/v1/models", "/v1/farebox/spend", "/v1/files", "/v1/fine_tuning/jobs"])
def test_the_admin_token_is_not_a_team_key(secure_stack: Stack, service_secrets: Secrets, path: str) -> None:
    """The admin token opens /admin only; on team routes it is just an unknown key."""
    resp = httpx.get(f"{secure_stack.v1}{path[3:]}", headers={"Authorization": f"Bearer {service_secrets.admin_token}"},
                     timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"
