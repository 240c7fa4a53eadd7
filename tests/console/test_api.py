"""The console's page, bundle and JSON reads against a running Farebox: headers, sign-in, one team's view only."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest

from tests.conftest import Stack
from tests.console.support import BASE_MODEL, chat, console, sdk, settled_job, upload
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)


def _get(stack: Stack, path: str, **kwargs: object) -> httpx.Response:
    return httpx.get(f"{stack.farebox.base_url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]


def test_the_page_is_locked_down_and_signs_in_without_a_url(stack: Stack) -> None:
    page = _get(stack, "/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp
        and "frame-ancestors 'none'" in csp
        and "unsafe-inline" not in csp
    )
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-frame-options"] == "DENY"
    form = re.search(r"<form id=\"signin-form\"[^>]*>", page.text)
    assert form and 'method="post"' in form.group(
        0
    )  # a form that falls back to GET would put the key in a URL
    assert '<label for="secret">' in page.text and 'type="password"' in page.text
    assert "<script>" not in page.text  # every script is a file the CSP allows


def test_static_files_are_served_with_etags_and_nothing_else(stack: Stack) -> None:
    script = _get(stack, "/console/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    again = _get(stack, "/console/static/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert _get(stack, "/console/static/console.css").headers["content-type"].startswith("text/css")
    for name in ("routes.py", "..%2Froutes.py", "..%2F..%2Fsettings.py", "index.html"):
        assert _get(stack, f"/console/static/{name}").status_code == 404, name


def test_posting_the_form_without_scripts_never_echoes_the_secret(stack: Stack) -> None:
    secret = "fbk_posted-by-a-browser-without-javascript"
    answer = httpx.post(f"{stack.farebox.base_url}/console", data={"secret": secret}, timeout=30)
    assert answer.status_code == 400 and "needs JavaScript" in answer.text
    assert secret not in answer.text and "no-store" in answer.headers["cache-control"]


def test_whoami_tells_the_admin_from_a_team(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    assert console(stack, stack.config.admin_token).get("/api/whoami").json() == {
        "role": "admin",
        "team_id": None,
        "team_name": None,
    }
    assert console(stack, key).get("/api/whoami").json() == {
        "role": "team",
        "team_id": team["id"],
        "team_name": team["name"],
    }
    for secret in ("fbk_not-a-real-key", stack.config.admin_token + "x"):
        refused = console(stack, secret).get("/api/whoami")
        assert (
            refused.status_code == 401
            and refused.json()["error"]["type"] == "invalid_request_error"
        )
    assert httpx.get(f"{stack.farebox.base_url}/console/api/jobs", timeout=30).status_code == 401


def test_a_team_sees_its_own_jobs_requests_and_budgets_and_nothing_else(stack: Stack) -> None:
    team_a, key_a = stack.admin.team_with_key()
    team_b, key_b = stack.admin.team_with_key()
    stack.admin.budget(team_a["id"], "5", "daily", name="a-daily")
    stack.admin.budget(team_b["id"], "7", "monthly", name="b-monthly")
    a, b = sdk(stack, key_a), sdk(stack, key_b)
    chat(a)
    chat(b)
    job = a.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=upload(a), hyperparameters={"n_epochs": 2}
    )
    record = settled_job(stack, key_a, job.id)

    # The estimate reserved at creation and the charge are the job's own ledger row and its rate.
    [charge] = [r for r in stack.ledger.wait_rows(team_a["id"], 2) if r["kind"] == "training"]
    assert record["cost_nano"] == charge["cost_nano"] > 0
    assert record["trained_tokens"] == charge["trained_tokens"]
    assert record["estimate_nano"] == record["estimated_tokens"] * charge["training_rate_nano"]
    assert record["status"] == "succeeded" and record["fine_tuned_model"].startswith("ft:")
    assert record["team_name"] == team_a["name"] and record["n_epochs"] == 2

    # Inference on the fine-tuned model shows beside the job that made it.
    chat(a, model=record["fine_tuned_model"])
    rows = stack.ledger.wait_rows(team_a["id"], 3)
    ft_cost = sum(
        r["cost_nano"] for r in rows if r["model_requested"] == record["fine_tuned_model"]
    )
    api_a = console(stack, key_a)
    spent = wait_until(
        lambda: (j := api_a.get("/api/jobs").json()["data"][0])["inference_requests"] == 1 and j,
        20,
        what="inference spend on the fine-tuned model",
    )
    assert spent["inference_nano"] == ft_cost > 0

    recent = api_a.get("/api/requests", params={"limit": 10}).json()["data"]
    assert {r["team_id"] for r in recent} == {team_a["id"]} and len(recent) == 3
    assert [r["request_id"] for r in recent] == [
        r["request_id"] for r in sorted(rows, key=lambda r: r["started_at"], reverse=True)
    ]
    only_ft = api_a.get("/api/requests", params={"model": record["fine_tuned_model"]}).json()[
        "data"
    ]
    assert [r["cost_nano"] for r in only_ft] == [ft_cost]
    assert [s["name"] for s in api_a.get("/api/standing").json()["budgets"]] == ["a-daily"]

    # Team B sees none of it, even when it names team A.
    stack.ledger.wait_rows(team_b["id"], 1)
    api_b = console(stack, key_b)
    for params in ({}, {"team": team_a["id"]}, {"team": team_a["name"]}):
        assert api_b.get("/api/jobs", params=params).json()["data"] == []
        assert {r["team_id"] for r in api_b.get("/api/requests", params=params).json()["data"]} == {
            team_b["id"]
        }
        standing = api_b.get("/api/standing", params=params).json()["budgets"]
        assert [(s["team_id"], s["name"]) for s in standing] == [(team_b["id"], "b-monthly")]
    assert (
        api_b.get("/api/requests", params={"model": record["fine_tuned_model"]}).json()["data"]
        == []
    )

    # The admin sees both teams, or one when asked.
    api_admin = console(stack, stack.config.admin_token)
    everything = api_admin.get("/api/standing").json()["budgets"]
    assert {("a-daily", team_a["name"]), ("b-monthly", team_b["name"])} <= {
        (s["name"], s["team_name"]) for s in everything
    }
    assert [
        j["id"] for j in api_admin.get("/api/jobs", params={"team": team_a["name"]}).json()["data"]
    ] == [job.id]
    assert api_admin.get("/api/jobs", params={"team": team_b["id"]}).json()["data"] == []
    assert api_admin.get("/api/jobs", params={"team": "no-such-team"}).status_code == 404


def test_standing_carries_the_pace_of_each_budget(stack: Stack) -> None:
    team, key = stack.admin.team_with_key()
    stack.admin.budget(team["id"], "0.00005", "total", name="tiny", kind="inference")
    stack.admin.budget(team["id"], "100", "daily", name="roomy")
    chat(sdk(stack, key))
    stack.ledger.wait_rows(team["id"], 1)
    answer = console(stack, key).get("/api/standing").json()
    budgets = {b["name"]: b for b in answer["budgets"]}
    tiny, roomy = budgets["tiny"], budgets["roomy"]
    assert tiny["spent_nano"] == roomy["spent_nano"] > 0
    assert roomy["outlook"] == "lasts" and roomy["runs_out_at"] is None

    # A total budget made a moment ago is paced over the one-hour minimum window, in whole nano-dollars.
    spent, remaining = tiny["spent_nano"], tiny["remaining_nano"]
    assert tiny["burn_nano_per_day"] == spent * 24
    assert tiny["outlook"] == "runs_out"
    at = datetime.fromisoformat(answer["at"])
    runs_out = datetime.fromisoformat(tiny["runs_out_at"])
    assert runs_out == at + timedelta(seconds=remaining * 3600 // spent)
