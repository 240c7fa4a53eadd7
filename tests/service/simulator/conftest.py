"""Fixtures for the simulator tests: a simulator per module and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from service.simulator.config import SimulatorConfig
from service.simulator.server import run_in_thread
from tests.service.simulator.reference import TEST_KEY


@pytest.fixture(scope="module")
def sim_config() -> SimulatorConfig:
    """Modules override this to start their simulator differently."""
    return SimulatorConfig(job_phase_s=0.15)


@pytest.fixture(scope="module")
def sim_url(sim_config: SimulatorConfig) -> Iterator[str]:
    with run_in_thread(sim_config) as url:
        yield url


@pytest.fixture
def client(sim_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim_url, api_key=TEST_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
async def aclient(sim_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=sim_url, api_key=TEST_KEY, max_retries=0)
    yield sdk
    await sdk.close()
