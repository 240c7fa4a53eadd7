"""Figures from fault and bad-input runs, collected per session for docs/faults.md.

Each test records one line (what it caused, requests during the fault, ledger rows after,
differences); the session prints them at the end and writes them to a JSON file in the
session's temp dir (or FAREBOX_FAULTS_JSON).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

_RESULTS: list[dict[str, Any]] = []
_REPORTED = False

Recorder = Callable[..., None]


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Recorder:
    """record_figures(fault=..., during=..., ledger_rows=..., differences=..., **more)."""

    def record(**figures: Any) -> None:
        line = {"test": request.node.nodeid, **figures}
        _RESULTS.append(line)
        print("FAULT " + orjson.dumps(line).decode())

    return record


def report(config: pytest.Config, terminal: Any) -> None:
    """Print the collected figures once and write them as JSON (called from the conftests' summary hook)."""
    global _REPORTED
    if _REPORTED or not _RESULTS:
        return
    _REPORTED = True
    target = os.environ.get("FAREBOX_FAULTS_JSON")
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's own; absent with -p no:tmpdir
    base = Path(factory.getbasetemp()) if factory is not None else Path(tempfile.gettempdir())
    path = Path(target) if target else base / f"faults-{os.getpid()}.json"
    path.write_bytes(orjson.dumps(_RESULTS, option=orjson.OPT_INDENT_2))
    terminal.section("faults and bad input: figures")
    for line in _RESULTS:
        terminal.write_line(orjson.dumps(line).decode())
    terminal.write_line(f"written to {path}")
