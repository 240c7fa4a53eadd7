"""Known ledger rows for the report tests, and the reports they must give, computed in Python."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import ApiKey, Team
from service.ledger.entries import write_events
from service.ledger.event import ChargeEvent
from service.reports.params import SpendQuery

UTC = timezone.utc
# Across a month end and ISO week ends: Fri 30 Oct, Sun 1 Nov, Mon 2 Nov, ..., Mon 30 Nov, Tue 1 Dec.
MOMENTS = (
    datetime(2026, 10, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 11, 1, 0, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 13, 30, tzinfo=UTC),
    datetime(2026, 11, 2, 0, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 15, 9, 0, tzinfo=UTC),
    datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2026, 12, 1, 0, 0, tzinfo=UTC),
)
TEAMS = ("team-a", "team-b")
KEYS = {"team-a": ("key-a1", "key-a2", None), "team-b": ("key-b1", None)}
MODELS = (("gpt-4o", None), ("gpt-4o-mini", None), ("ft:gpt-4o-mini:acme::x1", "gpt-4o-mini"))


def known_events() -> list[ChargeEvent]:
    """A spread of charges; costs are large and odd so no two groups can sum alike by accident."""
    events = []
    i = 0
    for team in TEAMS:
        for key in KEYS[team]:
            for model, base in MODELS:
                for m, at in enumerate(MOMENTS):
                    i += 1
                    training = (i % 5 == 0)
                    events.append(ChargeEvent(
                        request_id=f"r-{i:05d}",
                        team_id=team,
                        key_id=key,
                        kind="training" if training else "inference",
                        status="ok" if i % 6 else "upstream_error",
                        started_at=at,
                        finished_at=at + timedelta(seconds=1),
                        cost_nano=987_654_321_007 * (i % 11 + 1) + i,
                        endpoint="fine_tuning.jobs" if training else "chat.completions",
                        model_requested=model,
                        base_model=base or (model if model != "gpt-4o" else None),
                        prompt_tokens=0 if training else 100 + i,
                        cached_tokens=0 if training else i % 7,
                        completion_tokens=0 if training else 10 + m,
                        total_tokens=0 if training else 110 + i + m,
                        trained_tokens=3_000_000_000 + i if training else 0,
                        input_rate_nano=None if training else 2_500,
                        cached_rate_nano=None if training else 1_250,
                        output_rate_nano=None if training else 10_000,
                        training_rate_nano=25_000 if training else None,
                    ))
    return events


async def seed(sessions: async_sessionmaker[AsyncSession], events: Sequence[ChargeEvent]) -> None:
    async with sessions() as s, s.begin():
        for team in TEAMS:
            s.add(Team(id=team, name=f"{team} name"))
        await s.flush()
        for team, keys in KEYS.items():
            for key in keys:
                if key is not None:
                    s.add(ApiKey(id=key, team_id=team, name=f"{key} label", prefix="fb-", key_hash=f"h-{key}"))
        await write_events(s, events)


def _bucket(at: datetime, granularity: str) -> str:
    at = at.astimezone(UTC)
    day: date = at.date()
    if granularity == "hour":
        return at.replace(minute=0, second=0, microsecond=0, tzinfo=None).isoformat() + "Z"
    if granularity == "day":
        return day.isoformat()
    if granularity == "week":
        return (day - timedelta(days=day.weekday())).isoformat()
    if granularity == "month":
        return day.replace(day=1).isoformat()
    return ""


def expected(events: Sequence[ChargeEvent], q: SpendQuery) -> dict[tuple, dict[str, int]]:
    """The report the ledger must give, from the events themselves."""
    out: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for ev in events:
        if q.since is not None and ev.started_at < q.since:
            continue
        if q.until is not None and ev.started_at >= q.until:
            continue
        dims = {"team": ev.team_id, "key": ev.key_id or "", "model": ev.model_requested,
                "base_model": ev.base_model or "", "kind": ev.kind}
        filters = {"team": q.team_id, "key": q.key_id, "model": q.model, "base_model": q.base_model, "kind": q.kind}
        if any(v is not None and dims[d] != v for d, v in filters.items()):
            continue
        if q.status is not None and ev.status != q.status:
            continue
        key = (_bucket(ev.started_at, q.granularity), *(dims[d] for d in q.group_by))
        acc = out[key]
        acc["requests"] += 1
        for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "trained_tokens", "cost_nano"):
            acc[name] += getattr(ev, name)
    return {k: dict(v) for k, v in out.items()}
