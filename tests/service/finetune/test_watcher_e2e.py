"""The job watcher across a restart, and woken by OpenAI's signed webhooks instead of polling."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

from service.finetune.webhooks import sign
from tests.conftest import Stack
from tests.harness import Proc, start_farebox, wait_until
from tests.service.finetune.conftest import WEBHOOK_SECRET
from tests.service.finetune.data import write_training_file
from tests.service.finetune.test_end_to_end import FT_RATE_NANO, one_training_row, sdk, standing


def upstream_status(sim: Proc, job_id: str) -> str:
    answer = httpx.get(f"{sim.base_url}/fine_tuning/jobs/{job_id}", headers={"Authorization": "Bearer sk-test"})
    return str(answer.raise_for_status().json()["status"])


def upload(stack: Stack, key: str, tmp_path: Path) -> str:
    path = write_training_file(tmp_path / "train.jsonl", count=40)
    with path.open("rb") as handle:
        return sdk(stack, key).files.create(file=handle, purpose="fine-tune").id


def test_a_job_that_ends_while_farebox_is_down_is_settled_once_after_the_restart(
    ft_sqlite_stack: Stack, ft_simulator: Proc, tmp_path: Path
) -> None:
    """The embedded stack: its store (and the job's hold) dies with the process, it polls only every
    30 s, and the job's webhook is lost while it is down. Postgres + Redis: test_settlement.py."""
    ft_stack = ft_sqlite_stack
    team, key = ft_stack.admin.team_with_key()
    ft_stack.admin.budget(team["id"], "10", period="daily", kind="training")
    client = sdk(ft_stack, key)
    job = client.fine_tuning.jobs.create(
        training_file=upload(ft_stack, key, tmp_path), model="gpt-3.5-turbo", hyperparameters={"n_epochs": 2},
    )

    ft_stack.farebox.stop()  # its webhook (sqlite stack) is lost while it is down
    wait_until(lambda: upstream_status(ft_simulator, job.id) == "succeeded", 30, what="the job to end upstream")
    ft_stack.farebox = start_farebox(ft_stack.config, ft_stack.farebox.log_path.parent,
                                     urlparse(ft_stack.farebox.base_url).port)

    # Nobody retrieves the job: the restarted watcher looks at every open job by itself.
    row = one_training_row(ft_stack, team["id"], job.id)
    trained = client.fine_tuning.jobs.retrieve(job.id).trained_tokens
    assert trained and row["cost_nano"] == trained * FT_RATE_NANO
    # The job's hold survived the restart (restored on the in-process store) and was released once.
    assert wait_until(lambda: standing(ft_stack, team["id"]) == (row["cost_nano"], 0), 10, what="the hold released")
    client.fine_tuning.jobs.retrieve(job.id)  # the end seen again
    assert [r["request_id"] for r in ft_stack.ledger.rows(team["id"])] == [row["request_id"]]


def test_a_signed_webhook_settles_the_job_without_waiting_for_a_poll(ft_sqlite_stack: Stack, tmp_path: Path) -> None:
    team, key = ft_sqlite_stack.admin.team_with_key()
    job = sdk(ft_sqlite_stack, key).fine_tuning.jobs.create(
        training_file=upload(ft_sqlite_stack, key, tmp_path), model="gpt-3.5-turbo", hyperparameters={"n_epochs": 1},
    )
    created = time.monotonic()
    # No client polls the job and this Farebox polls every 30 s: only the webhook can settle it this soon.
    row = one_training_row(ft_sqlite_stack, team["id"], job.id)
    assert time.monotonic() - created < 20
    assert row["status"] == "ok" and row["cost_nano"] == row["trained_tokens"] * FT_RATE_NANO > 0


def test_unsigned_or_forged_webhooks_are_refused(ft_sqlite_stack: Stack) -> None:
    url = f"{ft_sqlite_stack.v1}/farebox/webhooks/openai"
    body = b'{"type": "fine_tuning.job.succeeded", "data": {"id": "ftjob-x"}}'
    assert httpx.post(url, content=body).status_code == 400
    stamp = int(time.time())
    forged = sign("whsec_" + base64.b64encode(b"not the secret").decode(), "wh_1", stamp, body)
    headers = {"webhook-id": "wh_1", "webhook-timestamp": str(stamp), "webhook-signature": forged}
    refused = httpx.post(url, content=body, headers=headers)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_webhook_signature")
    headers["webhook-signature"] = sign(WEBHOOK_SECRET, "wh_1", stamp, body)
    assert httpx.post(url, content=body, headers=headers).json() == {"received": True}


def test_webhooks_are_not_served_without_a_secret(ft_pg_stack: Stack) -> None:
    answer = httpx.post(f"{ft_pg_stack.v1}/farebox/webhooks/openai", content=b"{}")
    assert answer.status_code == 404
