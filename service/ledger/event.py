"""A settled charge on its way to the ledger: what settle puts in the outbox."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ChargeEvent:
    """Everything one ledger row holds; serialised into the outbox by settle."""

    request_id: str
    team_id: str
    kind: str  # inference | training
    status: str  # ok | upstream_error | client_disconnected | stream_broken | failed | cancelled
    started_at: datetime
    finished_at: datetime
    cost_nano: int = 0
    key_id: str | None = None
    endpoint: str = ""
    upstream_request_id: str | None = None
    model_requested: str = ""
    model_answered: str | None = None
    base_model: str | None = None
    fine_tuned: bool = False
    priced: bool = True
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    trained_tokens: int = 0
    input_rate_nano: int | None = None
    cached_rate_nano: int | None = None
    output_rate_nano: int | None = None
    training_rate_nano: int | None = None
    catalog_version: str = ""
    usage_source: str = "upstream"  # upstream | tiktoken | none
    http_status: int | None = None
    job_id: str | None = None

    def to_bytes(self) -> bytes:
        # orjson serialises dataclasses and datetimes natively. A naive timestamp is UTC (as_utc),
        # and the offset is written out so the bytes can go to the database as they are.
        return orjson.dumps(self, option=orjson.OPT_NAIVE_UTC)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> ChargeEvent:
        data: dict[str, Any] = orjson.loads(raw)
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["finished_at"] = datetime.fromisoformat(data["finished_at"])
        return cls(**data)

    def as_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
