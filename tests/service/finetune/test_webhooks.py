"""Standard-webhooks signature checks, against the simulator's signer (what OpenAI sends)."""

from __future__ import annotations

import base64

import pytest

from service.finetune.webhooks import WebhookRejected, sign, verify
from service.simulator.webhooks import sign as upstream_sign

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"type": "fine_tuning.job.succeeded", "data": {"id": "ftjob-abc"}}'
NOW = 1_750_000_000


def headers(signature: str, stamp: int = NOW, webhook_id: str = "wh_1") -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def test_our_signature_matches_the_upstreams_and_verifies() -> None:
    assert sign(SECRET, "wh_1", NOW, BODY) == upstream_sign(SECRET, "wh_1", NOW, BODY)
    verify(SECRET, headers(upstream_sign(SECRET, "wh_1", NOW, BODY)), BODY, now=NOW + 10)


def test_any_of_several_signatures_may_match_during_a_secret_rotation() -> None:
    old = sign("whsec_" + base64.b64encode(b"old secret").decode(), "wh_1", NOW, BODY)
    verify(SECRET, headers(f"{old} {sign(SECRET, 'wh_1', NOW, BODY)}"), BODY, now=NOW)


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"body": BODY.replace(b"abc", b"xyz")}, "No webhook signature matches"),
        ({"webhook_id": "wh_2"}, "No webhook signature matches"),
        ({"now": NOW + 301}, "too old"),
        ({"now": NOW - 301}, "in the future"),
    ],
)
def test_tampered_or_replayed_webhooks_are_rejected(changed: dict, reason: str) -> None:
    signature = sign(SECRET, "wh_1", NOW, BODY)
    with pytest.raises(WebhookRejected, match=reason):
        verify(
            SECRET, headers(signature, webhook_id=changed.get("webhook_id", "wh_1")),
            changed.get("body", BODY), now=changed.get("now", NOW),
        )


def test_missing_headers_are_rejected() -> None:
    with pytest.raises(WebhookRejected, match="lacks"):
        verify(SECRET, {"webhook-id": "wh_1"}, BODY, now=NOW)
