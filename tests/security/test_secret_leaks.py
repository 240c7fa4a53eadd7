"""After a workload of successes and failures, no secret is in any log line, error body, metric or stored row.

The secrets: client keys (valid, revoked, wrong), the admin token (right and wrong), the upstream
OpenAI key and the key pepper. The only place a client key may appear is the admin's answer that
creates it, once.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import Stack, make_stack
from tests.harness import Proc, start_simulator
from tests.reliability.results import Recorder
from tests.security.conftest import Secrets, secure_config
from tests.security.test_keys import database_text

pytestmark = pytest.mark.timeout(180)

EXAMPLE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


def _fragments(secret: str) -> list[str]:
    """The secret and every 10-character piece of it past its public prefix (fbk_xxxxxxxx, sk-)."""
    body = secret[12:] if secret.startswith("fbk_") else secret[3:] if secret.startswith("sk-") else secret
    return [secret] + [body[i:i + 10] for i in range(0, max(1, len(body) - 9), 5)]


def _scan(text: str, secrets_: list[str]) -> list[str]:
    return [s for s in secrets_ for piece in _fragments(s) if piece in text]


def _workload(stack: Stack, service_secrets: Secrets) -> tuple[str, list[str], list[str]]:
    """Drive successes and every kind of failure; returns (team id, client secrets used, texts the clients received)."""
    admin = stack.admin
    team = admin.team()
    admin.budget(team["id"], "20", "daily")
    good = admin.key(team["id"])["key"]
    revoked = admin.key(team["id"])
    admin.http.post(f"/keys/{revoked['id']}/revoke").raise_for_status()
    wrong = "fbk_" + secrets.token_urlsafe(32)
    wrong_admin = "adm_" + secrets.token_hex(20)
    received: list[str] = []

    def keep(resp: httpx.Response) -> None:
        received.append(resp.text + "\n" + "\n".join(f"{k}: {v}" for k, v in resp.headers.items()))

    with httpx.Client(base_url=stack.v1, timeout=30) as http:
        chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        for key in (good, revoked["key"], wrong, service_secrets.admin_token, service_secrets.upstream_key):
            keep(http.post("/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}))
        auth = {"Authorization": f"Bearer {good}"}
        for fault in ("500", "429", "garbage"):
            keep(http.post("/chat/completions", json=chat, headers={**auth, "x-sim-error": fault}))
        keep(http.post("/chat/completions", json={**chat, "stream": True}, headers={**auth, "x-sim-break-after": "2"}))
        keep(http.post("/chat/completions", json={**chat, "stream": True}, headers=auth))
        keep(http.post("/chat/completions", content=b"{broken", headers=auth))
        keep(http.post("/files", headers=auth, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", b"nope\n")}))
        keep(http.post("/files", headers=auth, data={"purpose": "fine-tune"}, files={"file": ("t.jsonl", EXAMPLE * 10)}))
        keep(http.get("/models", headers=auth))
        keep(http.get("/farebox/spend", headers=auth))
    client = openai.OpenAI(base_url=stack.v1, api_key=good, max_retries=0)
    client.embeddings.create(model="text-embedding-3-small", input="leak check")
    with pytest.raises(openai.AuthenticationError) as caught:
        openai.OpenAI(base_url=stack.v1, api_key=wrong, max_retries=0).models.list()
    received.append(str(caught.value))
    for token in (wrong_admin, good):
        keep(httpx.get(f"{stack.farebox.base_url}/admin/teams", headers={"Authorization": f"Bearer {token}"}))
    keep(httpx.get(f"{stack.farebox.base_url}/console/api/whoami", headers={"Authorization": f"Bearer {wrong}"}))
    keep(admin.http.get(f"/teams/{team['id']}/keys"))
    keep(admin.http.get(f"/teams/{team['id']}/standing"))
    stack.ledger.wait_rows(team["id"], 7)  # 2 ok chats, 3 upstream errors, 1 broken stream, 1 embedding
    return team["id"], [good, revoked["key"], wrong, wrong_admin], received


def test_no_secret_in_logs_bodies_metrics_or_stored_rows(
    secure_stack: Stack, service_secrets: Secrets, log_dir: Path, redis_url: str, record_figures: Recorder,
) -> None:
    team_id, client_secrets, received = _workload(secure_stack, service_secrets)
    every = client_secrets + service_secrets.all()
    logs = {p.name: p.read_text(errors="replace") for p in log_dir.glob("farebox-*.log")}
    log_lines = sum(text.count("\n") for text in logs.values())
    assert secure_stack.farebox.log_path.name in logs and log_lines > 10
    metrics = httpx.get(f"{secure_stack.farebox.base_url}/metrics", timeout=10).text
    database = database_text(secure_stack.config.database_url)
    with redis.Redis.from_url(redis_url) as r:
        stored = "\n".join(
            f"{key!r} {r.dump(key)!r}" for key in r.scan_iter(match=f"{secure_stack.config.redis_namespace}*", count=1000)
        )
    found = {
        "logs": {name: _scan(text, every) for name, text in logs.items() if _scan(text, every)},
        "error bodies and headers": _scan("\n".join(received), every),
        "metrics": _scan(metrics, every),
        "database": _scan(database, every),
        "redis": _scan(stored, every),
    }
    record_figures(fault="secret scan after a workload of successes and failures", requests=len(received),
                   during=len(received), ledger_rows=len(secure_stack.ledger.rows(team_id)), log_lines=log_lines,
                   secrets=len(every), leaks=sum(len(v) for v in found.values()),
                   differences=sum(len(v) for v in found.values()))
    assert not any(found.values()), found


@pytest.fixture(scope="module")
def strict_upstream(log_dir: Path) -> Iterator[Proc]:
    """A simulated OpenAI that accepts only its own key, so it refuses Farebox's."""
    proc = start_simulator(log_dir, "--api-key", "sk-the-only-key-" + uuid.uuid4().hex)
    yield proc
    proc.stop()


def test_an_upstream_refusing_farebox_key_does_not_echo_it_to_clients(
    strict_upstream: Proc, log_dir: Path, pg_url: str, redis_url: str, service_secrets: Secrets,
) -> None:
    """OpenAI's 401 names the key it refused (first 3 and last 4 characters); that is Farebox's, not the caller's."""
    stack = make_stack("postgres", secure_config(strict_upstream, pg_url, redis_url, service_secrets), log_dir)
    try:
        team, key = stack.admin.team_with_key()
        auth = {"Authorization": f"Bearer {key}"}
        masked = service_secrets.upstream_key[-4:]
        answers = [
            httpx.post(f"{stack.v1}/chat/completions", headers=auth, timeout=10,
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
            httpx.post(f"{stack.v1}/chat/completions", headers=auth, timeout=10,
                       json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": True}),
            httpx.get(f"{stack.v1}/models", headers=auth, timeout=10),
            httpx.get(f"{stack.v1}/models/gpt-4o-mini", headers=auth, timeout=10),
            httpx.post(f"{stack.v1}/files", headers=auth, data={"purpose": "fine-tune"},
                       files={"file": ("t.jsonl", EXAMPLE * 10)}, timeout=10),
        ]
        for resp in answers:
            assert resp.status_code >= 400
            assert masked not in resp.text and service_secrets.upstream_key[:12] not in resp.text, \
                f"{resp.request.url}: {resp.status_code} {resp.text[:300]}"
            # The caller's own key is fine, so the answer must not read as if it were not.
            assert resp.status_code != 401, f"{resp.request.url} answered 401: the caller would blame its own key"
        rows = stack.ledger.wait_rows(team["id"], 2)
        assert all(r["cost_nano"] == 0 for r in rows)
    finally:
        stack.farebox.stop()
