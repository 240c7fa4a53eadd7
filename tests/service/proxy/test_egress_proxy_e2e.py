"""Farebox behind an egress proxy: every upstream connection, inference and files alike, goes
through a real CONNECT proxy with credentials, and a proxy that refuses is a clear 502."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Stack, make_stack
from tests.connect_proxy import ConnectProxy
from tests.harness import FareboxConfig, Proc

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    running = ConnectProxy.in_thread("egress", "pa:ss")
    yield running
    running.stop_thread()


@contextlib.contextmanager
def _farebox(
    simulator: Proc, proxy: ConnectProxy, password: str, log_dir: Path, tmp: Path
) -> Iterator[tuple[Stack, dict[str, Any], openai.OpenAI]]:
    """A Farebox whose upstream is reached only through the proxy, a team and its SDK client."""
    config = FareboxConfig(
        f"sqlite+aiosqlite:///{tmp / 'farebox.db'}", simulator.base_url,
        extra_env={"FAREBOX_UPSTREAM_PROXY_URL": proxy.url("egress", password)},
    )
    stack = make_stack("sqlite", config, log_dir)
    try:
        team, key = stack.admin.team_with_key()
        yield stack, team, openai.OpenAI(base_url=stack.v1, api_key=key, max_retries=0)
    finally:
        stack.farebox.stop()


def test_inference_streams_and_files_all_go_through_the_proxy(
    simulator: Proc, proxy: ConnectProxy, log_dir: Path, tmp_path: Path
) -> None:
    with _farebox(simulator, proxy, "pa%3Ass", log_dir, tmp_path) as (stack, team, client):
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "through the proxy"}], max_tokens=20
        )
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "stream it"}], max_tokens=20, stream=True
        ))
        training = tmp_path / "train.jsonl"
        training.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 10)
        with training.open("rb") as handle:
            uploaded = client.files.create(file=handle, purpose="fine-tune")
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        assert uploaded.bytes == training.stat().st_size
        upstream = simulator.base_url.split("//")[1].split("/")[0]
        assert proxy.tunnels and set(proxy.tunnels) == {upstream}  # inference: the pool's CONNECT
        # files: aiohttp sends a plain http:// upstream's requests through the proxy in absolute form
        assert f"POST http://{upstream}/v1/files" in proxy.forwarded
        rows = stack.ledger.wait_rows(team["id"], 2)
        assert all(row["status"] == "ok" and row["cost_nano"] > 0 for row in rows)
        assert "pa:ss" not in stack.farebox.log() and "pa%3Ass" not in stack.farebox.log()


def test_a_proxy_that_refuses_the_tunnel_is_a_clear_502_ledgered_at_zero(
    simulator: Proc, proxy: ConnectProxy, log_dir: Path, tmp_path: Path
) -> None:
    with _farebox(simulator, proxy, "wrong", log_dir, tmp_path) as (stack, team, client):
        with pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], max_tokens=5)
        assert refused.value.status_code == 502
        assert "could not be reached" in refused.value.message
        [row] = stack.ledger.wait_rows(team["id"], 1)
        assert (row["status"], row["cost_nano"], row["http_status"]) == ("upstream_error", 0, 502)
        assert "407" in stack.farebox.log()  # the operator's log says why
        assert "HTTP/1.1 407 Proxy Authentication Required" in proxy.refused
