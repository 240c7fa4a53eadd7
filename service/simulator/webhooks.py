"""Fine-tuning webhooks as OpenAI sends them: standard-webhooks headers, HMAC-SHA256 signed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import time
from typing import TYPE_CHECKING

import orjson

from service.simulator.config import SimulatorConfig

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: v1,<base64 HMAC-SHA256 of "id.timestamp.body">."""
    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def event_payload(event_type: str, object_id: str) -> bytes:
    return orjson.dumps(
        {
            "id": "evt_" + os.urandom(16).hex(),
            "object": "event",
            "type": event_type,
            "created_at": int(time.time()),
            "data": {"id": object_id},
        }
    )


class WebhookSender:
    """Posts events to the configured URL in the background, retrying failures with backoff."""

    def __init__(self, config: SimulatorConfig) -> None:
        self._url = config.webhook_url
        self._secret = config.webhook_secret
        self._retries = config.webhook_retries
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0

    def send(self, event_type: str, object_id: str) -> None:
        if not self._url:
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(event_payload(event_type, object_id))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: bytes) -> None:
        import aiohttp  # only simulators that send webhooks pay for importing it

        assert self._url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        webhook_id = "wh_" + os.urandom(16).hex()
        for attempt in range(self._retries + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)",
                "webhook-id": webhook_id,
                "webhook-timestamp": str(timestamp),
            }
            if self._secret:
                headers["webhook-signature"] = sign(self._secret, webhook_id, timestamp, body)
            try:
                async with self._session.post(self._url, data=body, headers=headers) as response:
                    if response.status < 300:
                        self.delivered += 1
                        return
                    log.info("webhook %s answered %s", webhook_id, response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                log.info("webhook %s failed: %s", webhook_id, exc)
            await asyncio.sleep(0.2 * 2**attempt)
        self.failed += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
