"""POSTs an alert body to a webhook URL; anything but a 2xx answer is a failed delivery."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from service.alerts.dispatcher import DeliveryFailed

USER_AGENT = "Farebox-Alerts/0.1"


class WebhookPoster:
    """One pooled HTTP client for every webhook this replica calls."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, url: str, body: dict[str, Any]) -> None:
        if self._session is None:
            raise DeliveryFailed("the webhook client is not started")
        try:
            # No redirects: a POST redirected to a GET would look delivered and be lost.
            async with self._session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, allow_redirects=False
            ) as response:
                if not 200 <= response.status < 300:
                    text = (await response.text(errors="replace"))[:300]
                    raise DeliveryFailed(f"HTTP {response.status}: {text}".strip())
        except DeliveryFailed:
            raise
        except TimeoutError:
            raise DeliveryFailed(f"timed out after {self._timeout.total} s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
