"""OpenAI's fine-tuning webhooks: verified (standard-webhooks signature), then the job is polled at once.

The webhook only says "look now": the watcher still reads the job from the upstream before
settling, so a replayed or forged event can never charge anything by itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

import orjson
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import FareboxError, NotFound
from service.proxy.body import read_body
from service.runtime import Runtime

log = structlog.get_logger(__name__)

TOLERANCE_S = 300  # the standard's default: older (or future) timestamps are replays
MAX_WEBHOOK_BYTES = 1024 * 1024


class WebhookRejected(FareboxError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_webhook_signature"


def signing_key(secret: str) -> bytes:
    """A whsec_ secret is base64; any other string is used as it is."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:])
        except binascii.Error:
            raise ValueError("the webhook secret after whsec_ is not base64") from None
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature value for this message: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Raise WebhookRejected unless a v1 signature in the headers matches and the timestamp is fresh."""
    webhook_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not stamp or not signatures:
        raise WebhookRejected("The webhook lacks the webhook-id, webhook-timestamp or webhook-signature header.")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookRejected("The webhook-timestamp header is not a number.") from None
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_S:
        raise WebhookRejected("The webhook timestamp is too old or in the future.")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return
    raise WebhookRejected("No webhook signature matches.")


async def receive_webhook(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    secret = rt.settings.webhook_secret
    if secret is None:
        raise NotFound("Webhooks are not configured on this Farebox (set FAREBOX_WEBHOOK_SECRET).", code="unknown_url")
    body = await read_body(request, MAX_WEBHOOK_BYTES)
    verify(secret.get_secret_value(), request.headers, body)
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected("The webhook body is not JSON.") from None
    kind = event.get("type") if isinstance(event, dict) else None
    data = event.get("data") if isinstance(event, dict) else None
    job_id = data.get("id") if isinstance(data, dict) else None
    if isinstance(kind, str) and kind.startswith("fine_tuning.job.") and isinstance(job_id, str):
        await request.app.state.job_watcher.poke(job_id)
        log.info("job_webhook", job_id=job_id, event_type=kind)
    return JSONResponse({"received": True})
