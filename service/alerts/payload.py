"""What a budget alert POSTs: a Slack-compatible message, or a generic JSON document."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pricing.money import format_usd, nano_to_usd

FORMATS: tuple[str, ...] = ("auto", "slack", "json")
_PER = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "total": "total"}


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """Everything an alert message says, read from the alert row, its team and its budget."""

    alert_id: int
    team_id: str
    team_name: str
    budget_id: str
    budget_name: str
    period: str  # daily | weekly | monthly | total ('' when the budget was deleted)
    threshold: int
    spent_nano: int
    limit_nano: int
    period_start: datetime | None  # None for a total budget
    period_end: datetime | None
    detected_at: datetime


def wants_slack(url: str, setting: str = "auto") -> bool:
    """Slack's body for Slack URLs; a '#format=slack|json' fragment or the setting overrides the guess."""
    parts = urlsplit(url)
    forced = parse_qs(parts.fragment).get("format", [""])[0].lower()
    if forced in ("slack", "json"):
        return forced == "slack"
    if setting in ("slack", "json"):
        return setting == "slack"
    host = (parts.hostname or "").lower()
    return host == "hooks.slack.com" or host.endswith(".hooks.slack.com")


def body_for(url: str, facts: AlertFacts, setting: str = "auto") -> dict[str, Any]:
    return slack_body(facts) if wants_slack(url, setting) else generic_body(facts)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat().replace("+00:00", "Z")


def utilisation_percent(spent_nano: int, limit_nano: int) -> str:
    """spent / limit in percent with two decimals, rounded down (never overstates)."""
    if limit_nano <= 0:
        return "0.00"
    hundredths = spent_nano * 10_000 // limit_nano
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def generic_body(f: AlertFacts) -> dict[str, Any]:
    """A plain JSON document: ids and names, the threshold, exact USD strings and nano integers."""
    return {
        "type": "farebox.budget_alert",
        "alert_id": f.alert_id,
        "team": {"id": f.team_id, "name": f.team_name},
        "budget": {"id": f.budget_id, "name": f.budget_name, "period": f.period or None},
        "threshold_percent": f.threshold,
        "utilisation_percent": utilisation_percent(f.spent_nano, f.limit_nano),
        "spent_usd": format_usd(f.spent_nano),
        "limit_usd": format_usd(f.limit_nano),
        "spent_nano": f.spent_nano,
        "limit_nano": f.limit_nano,
        "period_start": _iso(f.period_start),
        "period_end": _iso(f.period_end),
        "detected_at": _iso(f.detected_at),
    }


def _human_usd(nano: int) -> str:
    """$12.50, $0.004: at least cents, no trailing zeros past them, never rounded."""
    value: Decimal = nano_to_usd(nano).normalize()
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return "$" + format(value, "f")


def _mrkdwn(text: str) -> str:
    """Slack treats &, < and > as control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _window(f: AlertFacts) -> str:
    if f.period_start is None:
        return "all time"
    start = f.period_start.strftime("%Y-%m-%d %H:%M")
    end = f.period_end.strftime("%Y-%m-%d %H:%M") if f.period_end is not None else "open"
    return f"{start} to {end} UTC"


def slack_body(f: AlertFacts) -> dict[str, Any]:
    """An incoming-webhook message: a plain `text` fallback and Block Kit blocks."""
    budget = _mrkdwn(f.budget_name or f.budget_id)
    team = _mrkdwn(f.team_name or f.team_id)
    icon = ":rotating_light:" if f.threshold >= 100 else ":warning:"
    headline = (
        f"{icon} Budget *{budget}* of team *{team}* reached {f.threshold}% "
        f"({utilisation_percent(f.spent_nano, f.limit_nano)}%): {_human_usd(f.spent_nano)} "
        f"of {_human_usd(f.limit_nano)}"
    )
    return {
        "text": headline,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*Spent*\n{format_usd(f.spent_nano)} USD"},
                    {"type": "mrkdwn", "text": f"*Limit*\n{format_usd(f.limit_nano)} USD"},
                    {"type": "mrkdwn", "text": f"*Period*\n{_PER.get(f.period, f.period or 'unknown')}"},
                    {"type": "mrkdwn", "text": f"*Window*\n{_window(f)}"},
                ],
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"Farebox alert {f.alert_id} · budget {_mrkdwn(f.budget_id)} · team {_mrkdwn(f.team_id)}"}
                ],
            },
        ],
    }
