"""The floor Farebox is measured against: a bare Python relay with the same moving parts.

Starlette on uvicorn (uvloop, httptools), one pooled aiohttp session to the upstream and two
Redis round trips per request (an EVALSHA before forwarding, an EVALSHA + XADD after), in
N worker processes, each on a socket of its own as Farebox's are. No auth, pricing, tokens,
ledger or metrics: what is left is the cost of relaying in Python at all. bench/run.py starts it beside Farebox:

    .venv/bin/python bench/floor_relay.py --port 9300 --upstream http://127.0.0.1:9200/v1 \
        --redis redis://127.0.0.1:6379/0 --namespace fbfloorX --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service import serve_workers

_ENV = "FAREBOX_FLOOR_CONFIG"
_HOLD = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
_SETTLE = "redis.call('INCRBY', KEYS[1], -ARGV[1]); return redis.call('XADD', KEYS[2], 'MAXLEN', '~', 1000, '*', 'e', ARGV[2])"
_DROP = frozenset({b"host", b"content-length", b"connection", b"authorization", b"accept-encoding"})


def create_app() -> Starlette:
    upstream_url, redis_url, namespace = os.environ[_ENV].split("|")
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = redis.Redis.from_url(redis_url, max_connections=512)
        state["redis"] = client
        state["hold"] = await client.script_load(_HOLD)
        state["settle"] = await client.script_load(_SETTLE)
        state["http"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=True
        )
        yield
        await state["http"].close()  # type: ignore[attr-defined]
        await client.aclose()

    async def relay(request: Request) -> Response:
        client: redis.Redis = state["redis"]  # type: ignore[assignment]
        http: aiohttp.ClientSession = state["http"]  # type: ignore[assignment]
        keys = (f"{namespace}:{{t}}:held", f"{namespace}:{{t}}:outbox")
        body = await request.body()
        await client.evalsha(state["hold"], 1, keys[0], 100)  # type: ignore[arg-type]
        headers = {k.decode(): v.decode() for k, v in request.scope["headers"] if k not in _DROP}
        headers["Authorization"] = "Bearer sk-floor"
        upstream = await http.post(f"{upstream_url}/chat/completions", data=body, headers=headers)
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for data in upstream.content.iter_any():
                        yield data
                finally:
                    upstream.release()
                    await client.evalsha(state["settle"], 2, *keys, 100, b"event")  # type: ignore[arg-type]

            return StreamingResponse(chunks(), media_type=upstream.headers["content-type"])
        data = await upstream.read()
        upstream.release()
        await client.evalsha(state["settle"], 2, *keys, 100, b"event")  # type: ignore[arg-type]
        return Response(
            data, status_code=upstream.status, media_type=upstream.headers.get("content-type")
        )

    return Starlette(
        routes=[Route("/v1/chat/completions", relay, methods=["POST"])], lifespan=lifespan
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    os.environ[_ENV] = f"{args.upstream}|{args.redis}|{args.namespace}"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    config = uvicorn.Config(
        "floor_relay:create_app",
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    if args.workers > 1:
        serve_workers.run(config)  # a socket per worker, as Farebox serves (service/serve_workers.py)
    else:
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
