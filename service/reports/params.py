"""What a spend report asks for: groupings, time buckets, a half-open UTC range and filters."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timezone

from service.errors import InvalidRequest

DIMENSIONS: tuple[str, ...] = ("team", "key", "model", "base_model", "kind")
GRANULARITIES: tuple[str, ...] = ("hour", "day", "week", "month", "none")
SOURCES: tuple[str, ...] = ("auto", "rollup", "ledger")
KINDS: tuple[str, ...] = ("inference", "training")


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """A spend report: sums grouped by `group_by` and a time bucket over [since, until) in UTC.

    status and endpoint are per-request filters only the ledger can answer; the rest the
    daily rollup answers too.
    """

    group_by: tuple[str, ...] = ()
    granularity: str = "day"
    since: datetime | None = None
    until: datetime | None = None
    team_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    base_model: str | None = None
    kind: str | None = None
    status: str | None = None
    endpoint: str | None = None
    source: str = "auto"

    def __post_init__(self) -> None:
        for dim in self.group_by:
            if dim not in DIMENSIONS:
                raise InvalidRequest(
                    f"Cannot group by {dim!r}: choose from {', '.join(DIMENSIONS)}.", param="group_by"
                )
        if len(set(self.group_by)) != len(self.group_by):
            raise InvalidRequest("group_by names a dimension twice.", param="group_by")
        if self.granularity not in GRANULARITIES:
            raise InvalidRequest(
                f"Unknown granularity {self.granularity!r}: choose from {', '.join(GRANULARITIES)}.",
                param="granularity",
            )
        if self.source not in SOURCES:
            raise InvalidRequest(f"Unknown source {self.source!r}: choose from {', '.join(SOURCES)}.", param="source")
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidRequest(f"Unknown kind {self.kind!r}: choose from {', '.join(KINDS)}.", param="kind")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise InvalidRequest("until must be after since (the range is [since, until)).", param="until")
        if self.source == "rollup" and not self.rollup_answers:
            raise InvalidRequest(
                "The daily rollup cannot answer this report (hourly buckets, status/endpoint filters "
                "or bounds that are not UTC midnights); use source=ledger or auto.",
                param="source",
            )

    @property
    def rollup_answers(self) -> bool:
        """True when ledger_daily holds exactly the sums this report needs."""
        return (
            self.granularity != "hour"
            and self.status is None
            and self.endpoint is None
            and all(bound is None or _is_midnight(bound) for bound in (self.since, self.until))
        )

    @property
    def uses_rollup(self) -> bool:
        return self.source == "rollup" or (self.source == "auto" and self.rollup_answers)

    def for_team(self, team_id: str) -> SpendQuery:
        """The same report confined to one team (a team key sees only its own spend)."""
        return replace(self, team_id=team_id)


def _is_midnight(ts: datetime) -> bool:
    return ts.astimezone(timezone.utc).time() == time(0)


def parse_instant(text: str | None, param: str) -> datetime | None:
    """'2026-11-01' (UTC midnight), '2026-11' (first of the month) or an ISO 8601 time (UTC if naive)."""
    if text is None or text.strip() == "":
        return None
    value = text.strip()
    try:
        if len(value) == 7:  # YYYY-MM
            return datetime.strptime(value, "%Y-%m").replace(tzinfo=timezone.utc)
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), timezone.utc)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"{param} must be a date (2026-11-01), a month (2026-11) or an ISO 8601 time, not {text!r}.",
            param=param,
        ) from None
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def parse_month(text: str) -> tuple[datetime, datetime]:
    """The UTC [start, end) of a calendar month given as '2026-11'."""
    try:
        start = datetime.strptime(text.strip(), "%Y-%m").replace(tzinfo=timezone.utc)
    except ValueError:
        raise InvalidRequest(f"month must look like 2026-11, not {text!r}.", param="month") from None
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """'team,model' -> ('team', 'model'); blanks ignored."""
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


def spend_query(
    *,
    group_by: str | None = None,
    granularity: str = "day",
    since: str | None = None,
    until: str | None = None,
    team: str | None = None,
    key: str | None = None,
    model: str | None = None,
    base_model: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    endpoint: str | None = None,
    source: str = "auto",
) -> SpendQuery:
    """A SpendQuery from the strings of a query string or a command line."""
    return SpendQuery(
        group_by=parse_group_by(group_by),
        granularity=granularity,
        since=parse_instant(since, "since"),
        until=parse_instant(until, "until"),
        team_id=team or None,
        key_id=key or None,
        model=model or None,
        base_model=base_model or None,
        kind=kind or None,
        status=status or None,
        endpoint=endpoint or None,
        source=source,
    )
