"""A simulated OpenAI API: the upstream Farebox's tests, demo and benchmark run against."""

from __future__ import annotations

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig

__all__ = ["SimulatorConfig", "create_app"]
