"""A model made by a job Farebox has not settled yet belongs to the job's team from its first use.

These Farebox processes poll jobs every 30 s and get no webhook, so a job ends upstream long
before Farebox settles it: the window in which its model and checkpoints used to be open to
every team that learned their names (the model list of the org showed them to everyone).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.conftest import Stack
from tests.harness import Admin, FareboxConfig, Ledger, Proc, start_farebox, wait_until
from tests.service.finetune.conftest import SLOW_POLLS
from tests.service.finetune.test_end_to_end import sdk
from tests.service.finetune.test_watcher_e2e import upload, upstream_status

SIM_KEY = {"Authorization": "Bearer sk-test"}


@pytest.fixture(params=["sqlite", "postgres"])
def unwatched(
    request: pytest.FixtureRequest, ft_simulator: Proc, log_dir: Path, tmp_path: Path,
    new_pg_database: Callable[[str], str], redis_url: str,
) -> Iterator[Stack]:
    """A Farebox that will not look at a job again for 30 s, on each backend."""
    if request.param == "sqlite":
        config = FareboxConfig(f"sqlite+aiosqlite:///{tmp_path / 'farebox.db'}", ft_simulator.base_url,
                               extra_env=dict(SLOW_POLLS))
    else:
        namespace = f"fbt{uuid.uuid4().hex[:10]}"
        config = FareboxConfig(new_pg_database("fbt_owners"), ft_simulator.base_url, redis_url, namespace,
                               extra_env=dict(SLOW_POLLS))
    proc = start_farebox(config, log_dir)
    yield Stack(request.param, proc, config, Admin(proc.base_url, config.admin_token), Ledger(config.database_url))
    proc.stop()
    if config.redis_namespace:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{config.redis_namespace}*", count=1000):
            client.delete(key)
        client.close()


def chat(client: openai.OpenAI, model: str) -> str:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    return answer.model


def test_a_model_and_checkpoints_of_an_unsettled_job_are_its_teams_alone(
    unwatched: Stack, ft_simulator: Proc, tmp_path: Path
) -> None:
    owner_team, owner_key = unwatched.admin.team_with_key()
    _, other_key = unwatched.admin.team_with_key()
    mine, other = sdk(unwatched, owner_key), sdk(unwatched, other_key)
    job = mine.fine_tuning.jobs.create(
        training_file=upload(unwatched, owner_key, tmp_path), model="gpt-3.5-turbo", hyperparameters={"n_epochs": 1},
    )
    wait_until(lambda: upstream_status(ft_simulator, job.id) == "succeeded", 30, what="the job to end upstream")
    model = httpx.get(f"{ft_simulator.base_url}/fine_tuning/jobs/{job.id}", headers=SIM_KEY).json()["fine_tuned_model"]
    checkpoints = httpx.get(f"{ft_simulator.base_url}/fine_tuning/jobs/{job.id}/checkpoints", headers=SIM_KEY).json()
    checkpoint = checkpoints["data"][0]["fine_tuned_model_checkpoint"]
    assert model.startswith("ft:gpt-3.5-turbo") and checkpoint.startswith(model + ":ckpt-step-")
    assert not [r for r in unwatched.ledger.rows(owner_team["id"]) if r["kind"] == "training"]  # not settled

    # Another team that learned the names (the org's model list carries them) is refused.
    assert model not in {m.id for m in other.models.list()}
    for name in (model, checkpoint):
        with pytest.raises(openai.NotFoundError) as refused:
            chat(other, name)
        assert refused.value.status_code == 404 and "does not exist or you do not have access" in str(refused.value)
    # The job's own team uses both, and sees its model listed.
    assert chat(mine, model) == model and chat(mine, checkpoint) == checkpoint
    assert model in {m.id for m in mine.models.list()}
    # A fine-tuned model no Farebox job made (trained elsewhere in the org) stays open to all teams.
    foreign = "ft:gpt-3.5-turbo-0125:elsewhere::x7Yq2"
    assert chat(other, foreign) == foreign
    # Still unsettled: the owner was found by asking the upstream, not by the job's settlement.
    assert not [r for r in unwatched.ledger.rows(owner_team["id"]) if r["kind"] == "training"]
