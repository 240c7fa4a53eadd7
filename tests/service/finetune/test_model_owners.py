"""Which unsettled jobs are asked about a name, and one upstream check per name at a time."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

import pytest

from service.auth.principal import Principal
from service.db.models import FineTuneJob
from service.errors import NotFound, UpstreamError
from service.finetune.model_owners import base_of, could_have_made
from service.models_access import ModelAccess, Resolution


def test_base_of_reads_the_base_of_models_and_checkpoints() -> None:
    assert base_of("ft:gpt-3.5-turbo-0125:acme:support:abc123") == "gpt-3.5-turbo-0125"
    assert base_of("ft:gpt-3.5-turbo-0125:acme::abc123:ckpt-step-40") == "gpt-3.5-turbo-0125"
    assert base_of("ft:davinci-002:acme::x") == "davinci-002"
    assert base_of("curie:ft-acme-2023-01-01") is None and base_of("ft-abc") is None


def job(model: str, base_model: str | None = None) -> FineTuneJob:
    return FineTuneJob(id="ftjob-1", team_id="t", request_id="r", model=model, base_model=base_model, training_file="f")


@pytest.mark.parametrize(
    ("the_job", "base", "asked"),
    [
        (job("gpt-3.5-turbo"), "gpt-3.5-turbo-0125", True),
        (job("gpt-3.5-turbo", "gpt-3.5-turbo-0125"), "gpt-3.5-turbo-0125", True),
        (job("ft:gpt-3.5-turbo-0125:acme::prev"), "gpt-3.5-turbo-0125", True),  # a continued fine-tune
        (job("babbage-002"), "gpt-3.5-turbo-0125", False),
        (job("davinci-002"), "babbage-002", False),
        (job("babbage-002"), None, True),  # a name of another shape: every unsettled job is asked
    ],
)
def test_only_jobs_on_a_compatible_base_are_asked(the_job: FineTuneJob, base: str | None, asked: bool) -> None:
    assert could_have_made(the_job, base) is asked


class _NoRows:
    """A database in which nobody owns or shares anything."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get(self, *args: Any) -> None:
        return None

    async def execute(self, *args: Any) -> Any:
        class Result:
            def scalars(self) -> Any:
                return self

            def all(self) -> list[str]:
                return []

        return Result()


async def test_concurrent_requests_for_one_unowned_name_ask_the_upstream_once() -> None:
    access = ModelAccess(lambda: _NoRows())  # type: ignore[arg-type,return-value]
    calls: list[str] = []
    release = asyncio.Event()

    async def resolve(model: str) -> Resolution:
        calls.append(model)
        await release.wait()
        return Resolution("team-owner")

    access.resolve = resolve
    model = "ft:gpt-3.5-turbo-0125:acme::abc"
    other = Principal(team_id="team-other", team_name="other", key_id="k", key_hash="h", expires_at=None)
    owner = Principal(team_id="team-owner", team_name="owner", key_id="k2", key_hash="h2", expires_at=None)
    waiting = [asyncio.create_task(access.check_access(other, model)) for _ in range(5)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert calls == [model]
    assert all(isinstance(r, NotFound) for r in results)
    await access.check_access(owner, model)  # cached: the owner passes, nobody asks again
    assert calls == [model]
    await access.check_access(other, "gpt-3.5-turbo")  # not a fine-tuned name: never resolved
    assert calls == [model]


async def test_an_owner_found_by_settlement_meanwhile_is_not_cached_as_open() -> None:
    """The job settled (recording its models) while the upstream was asked: read again."""
    access = ModelAccess(lambda: _NoRows())  # type: ignore[arg-type,return-value]
    model = "ft:gpt-3.5-turbo-0125:acme::abc"
    reads = 0

    async def read(name: str) -> tuple[str | None, frozenset[str]]:
        nonlocal reads
        reads += 1
        return (None if reads == 1 else "team-owner"), frozenset()

    async def resolve(name: str) -> Resolution:
        return Resolution(None)  # the job was settled before the resolver looked: no unsettled job

    access._read = read  # type: ignore[method-assign]
    access.resolve = resolve
    assert await access.owner_of(model) == "team-owner"


async def test_an_unowned_name_an_unsettled_job_might_still_make_is_asked_again_soon() -> None:
    access = ModelAccess(lambda: _NoRows())  # type: ignore[arg-type,return-value]
    model = "ft:gpt-3.5-turbo-0125:acme::abc"
    asked: list[str] = []

    async def resolve(name: str) -> Resolution:
        asked.append(name)
        return Resolution(None, may_change=True)

    access.resolve = resolve
    assert await access.owner_of(model) is None
    assert await access.owner_of(model) is None
    assert asked == [model]  # cached, but only briefly
    expiry = access._cache[model][2]
    assert expiry - time.monotonic() <= 2.0


async def test_a_failed_check_reaches_every_waiter_and_is_asked_again_next_time() -> None:
    access = ModelAccess(lambda: _NoRows())  # type: ignore[arg-type,return-value]
    model = "ft:gpt-3.5-turbo-0125:acme::abc"
    attempts = 0

    async def resolve(name: str) -> Resolution:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.01)
        if attempts == 1:
            raise UpstreamError("the upstream answered 503")
        return Resolution("team-owner")

    access.resolve = resolve
    results = await asyncio.gather(*(access.owner_of(model) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, UpstreamError) for r in results) and attempts == 1
    assert await access.owner_of(model) == "team-owner" and attempts == 2
