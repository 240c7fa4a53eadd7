"""A team key never reaches another team's files, jobs, models or spend, whichever endpoint it tries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, make_stack
from tests.harness import Proc, wait_until
from tests.reliability.results import Recorder
from tests.security.conftest import Secrets, secure_config

pytestmark = pytest.mark.timeout(180)

EXAMPLE = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'


@pytest.fixture(scope="module")
def stack(simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, service_secrets: Secrets) -> Iterator[Stack]:
    config = secure_config(simulator, pg_url, redis_url, service_secrets, farebox_job_poll_interval_s="0.5",
                           farebox_job_poll_max_interval_s="1")
    stack = make_stack("postgres", config, log_dir)
    yield stack
    stack.farebox.stop()


class Team:
    def __init__(self, stack: Stack) -> None:
        team, key = stack.admin.team_with_key()
        self.id = team["id"]
        self.name = team["name"]
        self.http = httpx.Client(base_url=stack.v1, headers={"Authorization": f"Bearer {key}"}, timeout=30)


@pytest.fixture(scope="module")
def victim(stack: Stack) -> dict[str, Any]:
    """Team B with a file, a finished fine-tuning job, its fine-tuned model, and spend."""
    b = Team(stack)
    stack.admin.budget(b.id, "50", "monthly")
    upload = b.http.post("/files", data={"purpose": "fine-tune"}, files={"file": ("train.jsonl", EXAMPLE * 12)})
    upload.raise_for_status()
    file_id = upload.json()["id"]
    job = b.http.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id})
    job.raise_for_status()
    job_id = job.json()["id"]
    done = wait_until(lambda: (j := b.http.get(f"/fine_tuning/jobs/{job_id}").json())["status"] == "succeeded" and j,
                      90, interval_s=0.3, what="the victim's job to succeed")
    model = done["fine_tuned_model"]
    b.http.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]}).raise_for_status()
    b.http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}).raise_for_status()
    stack.ledger.wait_rows(b.id, 3)
    return {"team": b, "file": file_id, "job": job_id, "model": model}


def test_a_team_key_cannot_reach_another_teams_things(
    stack: Stack, victim: dict[str, Any], record_figures: Recorder,
) -> None:
    a = Team(stack)
    b: Team = victim["team"]
    file_id, job_id, model = victim["file"], victim["job"], victim["model"]
    secrets_of_b = (file_id, job_id, model, b.id, b.name)

    def refused(resp: httpx.Response, *, codes: tuple[int, ...] = (404,)) -> None:
        assert resp.status_code in codes, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:300]}"
        assert "error" in resp.json()

    attempts = [
        # Files
        lambda: refused(a.http.get(f"/files/{file_id}")),
        lambda: refused(a.http.get(f"/files/{file_id}/content")),
        lambda: refused(a.http.get(f"/files/{file_id}/estimate")),
        lambda: refused(a.http.delete(f"/files/{file_id}")),
        lambda: refused(a.http.post("/farebox/estimates", json={"training_file": file_id, "model": "gpt-4o-mini-2024-07-18"})),
        # Jobs
        lambda: refused(a.http.get(f"/fine_tuning/jobs/{job_id}")),
        lambda: refused(a.http.get(f"/fine_tuning/jobs/{job_id}/events")),
        lambda: refused(a.http.get(f"/fine_tuning/jobs/{job_id}/checkpoints")),
        lambda: refused(a.http.post(f"/fine_tuning/jobs/{job_id}/cancel")),
        lambda: refused(a.http.post(f"/fine_tuning/jobs/{job_id}/pause")),
        lambda: refused(a.http.post(f"/fine_tuning/jobs/{job_id}/resume")),
        lambda: refused(a.http.post("/fine_tuning/jobs", json={"model": "gpt-4o-mini-2024-07-18", "training_file": file_id}),
                        codes=(400, 404)),
        # Models
        lambda: refused(a.http.get(f"/models/{model}")),
        lambda: refused(a.http.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]})),
        lambda: refused(a.http.post("/completions", json={"model": model, "prompt": "x"})),
    ]
    for attempt in attempts:
        attempt()

    # Lists and reports show nothing of B, whatever the query asks for.
    listings = [
        a.http.get("/files"), a.http.get("/fine_tuning/jobs"), a.http.get("/models"),
        a.http.get("/farebox/spend", params={"team": b.id}), a.http.get("/farebox/spend", params={"team_id": b.id}),
        a.http.get(f"{stack.farebox.base_url}/console/api/requests", params={"team": b.id}),
        a.http.get(f"{stack.farebox.base_url}/console/api/jobs", params={"team": b.id}),
        a.http.get(f"{stack.farebox.base_url}/console/api/standing", params={"team": b.id}),
    ]
    for resp in listings:
        assert resp.status_code == 200, f"{resp.request.url}: {resp.status_code} {resp.text[:200]}"
        assert not any(s in resp.text for s in secrets_of_b), f"{resp.request.url} shows team B's things"
    spend = a.http.get("/farebox/spend", params={"team": b.id}).json()
    assert spend["totals"]["cost_nano"] == 0 and spend["totals"]["requests"] == 0
    # The admin routes are closed to team keys too.
    for path in (f"/admin/teams/{b.id}/standing", "/admin/reports/spend", f"/admin/reports/statement?team={b.id}"):
        assert a.http.get(f"{stack.farebox.base_url}{path}").status_code == 401

    # Nothing A tried changed B's things or charged anyone.
    assert b.http.get(f"/files/{file_id}").status_code == 200
    assert b.http.get(f"/fine_tuning/jobs/{job_id}").json()["status"] == "succeeded"
    assert b.http.post("/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    assert stack.ledger.rows(a.id) == []
    tried = len(attempts) + len(listings) + 3
    record_figures(fault="team A's key against team B's files, jobs, models, spend", requests=tried, during=tried,
                   ledger_rows=0, reached=0, differences=0)


def test_a_shared_model_opens_to_that_team_only(stack: Stack, victim: dict[str, Any]) -> None:
    a, c = Team(stack), Team(stack)
    model = victim["model"]
    chat = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    assert a.http.post("/chat/completions", json=chat).status_code == 404
    stack.admin.http.post(f"/models/{model}/share", json={"team_id": a.id}).raise_for_status()
    assert a.http.post("/chat/completions", json=chat).status_code == 200
    assert c.http.post("/chat/completions", json=chat).status_code == 404
    stack.admin.http.post(f"/models/{model}/unshare", json={"team_id": a.id}).raise_for_status()
    assert a.http.post("/chat/completions", json=chat).status_code == 404
