"""A local webhook receiver for alert tests: records every POST, can fail the first attempts."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.harness import free_port


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class Receiver:
    """POST /<name> records the body; while fail_first[name] attempts for an alert remain, it answers 500."""

    fail_first: dict[str, int] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    failed: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _attempts: Counter = field(default_factory=Counter)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = orjson.loads(await request.read())
        item = Received(name, body)
        key = (name, body.get("alert_id", orjson.dumps(body)))
        self._attempts[key] += 1
        if self._attempts[key] <= self.fail_first.get(name, 0):
            self.failed.append(item)
            return web.Response(status=500, text="receiver down for maintenance")
        self.received.append(item)
        return web.json_response({"ok": True})

    def bodies(self, name: str) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.path == name]

    async def wait_for(self, name: str, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Poll until `count` deliveries reached `name`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(self.bodies(name)) < count:
            assert loop.time() < deadline, f"{name}: {len(self.bodies(name))} of {count} alerts arrived"
            await asyncio.sleep(0.02)
        return self.bodies(name)
