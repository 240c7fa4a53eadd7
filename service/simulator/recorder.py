"""What reached the simulator: request counts, and the last requests with headers and bodies."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request


@dataclass(slots=True)
class Received:
    """One request as it arrived; status is filled in once the answer is known."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes | None
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        body: Any = None
        if self.raw_body is not None:
            try:
                body = orjson.loads(self.raw_body)
            except orjson.JSONDecodeError:
                body = self.raw_body.decode("utf-8", "replace")
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": body,
            "status": self.status,
        }


@dataclass
class Recorder:
    """Counts every API request (not /v1/_sim) and keeps the most recent ones."""

    keep: int = 100
    total: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    recent: deque[Received] = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=max(1, self.keep))

    def record(self, request: Request, raw_body: bytes | None, route: str) -> Received:
        scope = request.scope
        entry = Received(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            raw_body,
        )
        self.total += 1
        self.by_endpoint[f"{entry.method} {route}"] += 1
        self.recent.append(entry)
        return entry

    def answered(self, entry: Received, status: int) -> None:
        entry.status = status
        self.by_status[status] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "by_endpoint": dict(self.by_endpoint),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }

    def reset(self) -> None:
        self.total = 0
        self.by_endpoint.clear()
        self.by_status.clear()
        self.recent.clear()
