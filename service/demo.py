"""`farebox demo`: the simulated upstream, Farebox on the embedded default, and a short walkthrough."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

console = Console()


def _free_port(preferred: int | None = None) -> int:
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready in {timeout_s:.0f} s")


def run_demo(*, port: int = 8080, keep_serving: bool = True) -> int:
    workdir = Path("var/demo")
    workdir.mkdir(parents=True, exist_ok=True)
    sim_port = _free_port()
    fb_port = _free_port(port)
    admin_token = "fba_" + secrets.token_urlsafe(24)
    env = dict(os.environ)
    env.update(
        FAREBOX_DATABASE_URL=f"sqlite+aiosqlite:///{workdir.resolve() / 'farebox.db'}",
        FAREBOX_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}/v1",
        FAREBOX_ADMIN_TOKEN=admin_token,
        FAREBOX_PORT=str(fb_port),
        FAREBOX_LOG_FORMAT="console",
        FAREBOX_LOG_LEVEL="WARNING",
    )
    real_key = bool(env.get("FAREBOX_OPENAI_API_KEY"))
    if real_key:
        env.pop("FAREBOX_UPSTREAM_URL")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if not real_key:
            procs.append(subprocess.Popen([sys.executable, "-m", "service.simulator", "--host", "127.0.0.1", "--port", str(sim_port)], env=env))
            _wait_ready(f"http://127.0.0.1:{sim_port}/v1/_sim/stats", procs[-1])
        procs.append(subprocess.Popen([sys.executable, "-m", "service", "serve"], env=env))
        base = f"http://127.0.0.1:{fb_port}"
        _wait_ready(f"{base}/readyz", procs[-1])
        upstream = "the real OpenAI API" if real_key else f"the simulated upstream on port {sim_port}"
        console.rule("[bold]Farebox demo")
        console.print(f"Farebox listens on [bold]{base}/v1[/bold], forwarding to {upstream}.")
        key = _walkthrough(base, admin_token)
        console.rule()
        console.print(f"Point the openai SDK at it:\n  openai.OpenAI(base_url=\"{base}/v1\", api_key=\"{key}\")")
        console.print(f"Admin API: {base}/admin (Authorization: Bearer {admin_token}); docs at {base}/admin/docs")
        if not keep_serving:
            return 0
        console.print("Serving until Ctrl-C.")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _walkthrough(base: str, admin_token: str) -> str:
    import openai

    admin = httpx.Client(base_url=f"{base}/admin", headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
    teams = {t["name"]: t for t in admin.get("/teams").raise_for_status().json()}
    team = teams.get("demo") or admin.post("/teams", json={"name": "demo"}).raise_for_status().json()
    key = admin.post(f"/teams/{team['id']}/keys", json={"name": "demo"}).raise_for_status().json()["key"]
    if not admin.get(f"/teams/{team['id']}/budgets").json():
        admin.post(f"/teams/{team['id']}/budgets", json={"name": "demo daily", "limit_usd": "0.05", "period": "daily"}).raise_for_status()
    console.print(f"Team [bold]demo[/bold] ({team['id']}) with a $0.05 daily budget; its new key: {key[:12]}…")

    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to finance."}], max_tokens=20
    )
    console.print(f"chat.completions  -> {chat.usage.prompt_tokens} prompt + {chat.usage.completion_tokens} completion tokens")
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Stream a short answer."}], max_tokens=12, stream=True
    )
    chunks = sum(1 for _ in stream)
    console.print(f"streamed chat     -> {chunks} chunks relayed as they came")
    emb = client.embeddings.create(model="text-embedding-3-small", input=["budgets", "ledgers"])
    console.print(f"embeddings        -> {len(emb.data)} vectors, {emb.usage.prompt_tokens} tokens")
    try:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Write a novel."}], max_tokens=16000
        )
    except openai.RateLimitError as exc:
        console.print(f"over budget       -> 429 {exc.body.get('code') if isinstance(exc.body, dict) else ''}: {exc.message}")

    standing = admin.get(f"/teams/{team['id']}/standing").raise_for_status().json()
    table = Table("budget", "limit $", "spent $", "reserved $", "remaining $")
    for s in standing:
        table.add_row(s["name"], s["limit_usd"], s["spent_usd"], s["reserved_usd"], s["remaining_usd"])
    console.print(table)
    return key
