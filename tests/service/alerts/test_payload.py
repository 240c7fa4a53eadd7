"""Alert bodies: Slack's for Slack URLs (or when forced), a generic JSON document otherwise."""

from __future__ import annotations

from datetime import datetime, timezone

from service.alerts.payload import AlertFacts, body_for, generic_body, slack_body, utilisation_percent, wants_slack

FACTS = AlertFacts(
    alert_id=7, team_id="team_1", team_name="R&D <core>", budget_id="bud_1", budget_name="monthly cap",
    period="monthly", threshold=80, spent_nano=80_000_000_001, limit_nano=100_000_000_000,
    period_start=datetime(2026, 11, 1, tzinfo=timezone.utc), period_end=datetime(2026, 12, 1, tzinfo=timezone.utc),
    detected_at=datetime(2026, 11, 20, 8, 30, tzinfo=timezone.utc),
)


def test_slack_is_chosen_by_host_fragment_or_setting() -> None:
    assert wants_slack("https://hooks.slack.com/services/T0/B0/xyz")
    assert not wants_slack("https://example.com/hooks")
    assert not wants_slack("https://hooks.slack.com.evil.example/x")
    assert wants_slack("https://chat.example.com/hooks/abc#format=slack")  # Mattermost and friends
    assert not wants_slack("https://hooks.slack.com/services/x#format=json")
    assert wants_slack("https://example.com/hooks", setting="slack")
    assert "blocks" in body_for("https://hooks.slack.com/services/x", FACTS)
    assert "blocks" not in body_for("https://example.com/x", FACTS)


def test_generic_body_has_exact_usd_strings_and_the_period() -> None:
    body = generic_body(FACTS)
    assert body["team"] == {"id": "team_1", "name": "R&D <core>"}
    assert body["budget"] == {"id": "bud_1", "name": "monthly cap", "period": "monthly"}
    assert body["threshold_percent"] == 80
    assert (body["spent_usd"], body["limit_usd"]) == ("80.000000001", "100.000000000")
    assert (body["spent_nano"], body["limit_nano"]) == (80_000_000_001, 100_000_000_000)
    assert (body["period_start"], body["period_end"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert body["utilisation_percent"] == "80.00"


def test_slack_body_escapes_control_characters_and_has_a_text_fallback() -> None:
    body = slack_body(FACTS)
    assert "R&amp;D &lt;core&gt;" in body["text"] and "<core>" not in body["text"]
    assert "80%" in body["text"] and "$80.000000001 of $100.00" in body["text"]
    fields = [f["text"] for f in body["blocks"][1]["fields"]]
    assert "*Spent*\n80.000000001 USD" in fields
    assert any("2026-11-01 00:00 to 2026-12-01 00:00 UTC" in f for f in fields)


def test_utilisation_rounds_down() -> None:
    assert utilisation_percent(999_999, 1_000_000) == "99.99"
    assert utilisation_percent(1_000_000, 1_000_000) == "100.00"
    assert utilisation_percent(5, 0) == "0.00"
