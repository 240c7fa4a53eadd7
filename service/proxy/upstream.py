"""The pooled HTTP client to OpenAI (or the simulated upstream). The upstream key lives only here."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp
import structlog

from service.errors import UpstreamError
from service.proxy.upstream_pool import Proxy, UpstreamAnswer, UpstreamPool

log = structlog.get_logger(__name__)

# Headers that describe one hop, or that Farebox sets itself, never relayed as they are.
_DROP_REQUEST = frozenset(
    {
        "host", "authorization", "content-length", "connection", "keep-alive",
        "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-connection", "accept-encoding", "openai-organization", "cookie",
    }
)
_DROP_REQUEST_RAW = frozenset(name.encode() for name in _DROP_REQUEST | {"content-type"})
_DROP_RESPONSE = frozenset(
    {
        "content-length", "connection", "keep-alive", "transfer-encoding", "content-encoding",
        "set-cookie", "server", "date", "alt-svc", "strict-transport-security",
    }
)


class Upstream:
    """The upstream, as every request of a worker reaches it.

    Inference POSTs go through `UpstreamPool` (service/proxy/upstream_pool.py), the lean
    client of the hot path; files, fine-tuning jobs and models through one aiohttp session.
    Each has its own keep-alive pool of `pool_size` connections. Both go through `proxy_url`
    (an HTTP proxy, by CONNECT) when one is set, and trust `ca_file`'s authorities besides the
    system's.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        organization: str | None = None,
        pool_size: int = 256,
        connect_timeout_s: float = 10.0,
        total_timeout_s: float = 600.0,
        proxy_url: str | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"
        self._organization = organization
        self._pool_size = pool_size
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout_s, connect=connect_timeout_s, sock_read=total_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        for value in (api_key, organization or ""):
            if "\r" in value or "\n" in value:
                raise ValueError("The upstream API key and organization must be on one line.")
        self._ssl = ssl.create_default_context()
        if ca_file is not None:
            self._ssl.load_verify_locations(cafile=str(ca_file))
        self._proxy = Proxy.from_url(proxy_url) if proxy_url else None
        self.pool = UpstreamPool(
            self.base_url, size=pool_size, connect_timeout_s=connect_timeout_s, total_timeout_s=total_timeout_s,
            ssl_context=self._ssl, proxy=self._proxy,
        )
        own = [(b"Authorization", self._auth.encode("latin-1")), (b"Content-Type", b"application/json")]
        if organization:
            own.append((b"OpenAI-Organization", organization.encode("latin-1")))
        own.append((b"Accept-Encoding", b"gzip, deflate"))
        self._own_raw = tuple(own)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=self._pool_size, ttl_dns_cache=300,
            enable_cleanup_closed=True, keepalive_timeout=60, ssl=self._ssl,
        )
        proxy = self._proxy
        auth = None
        if proxy is not None and proxy.user is not None:  # UTF-8, as the pool's CONNECT encodes it
            auth = aiohttp.BasicAuth(proxy.user, proxy.password or "", encoding="utf-8")
        with warnings.catch_warnings():
            # The session-wide proxy_auth is deprecated for aiohttp 4 (pinned: 3.14.5); its
            # replacement, proxy_headers, exists only per request.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._session = aiohttp.ClientSession(
                connector=connector,
                proxy=proxy.url if proxy else None,
                proxy_auth=auth,
                timeout=self._timeout,
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
                json_serialize=None,  # type: ignore[arg-type]
            )

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Upstream.start() was not awaited"
        return self._session

    def url(self, path: str, query: str = "") -> str:
        """path is what follows /v1 on the client's side, e.g. '/chat/completions'."""
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    async def post_json(
        self, path: str, query: str, body: bytes, client_headers: Sequence[tuple[bytes, bytes]]
    ) -> UpstreamAnswer:
        """An inference POST through the lean pool; client_headers as ASGI gives them (lowercase).

        The client's headers are relayed as `request_headers` relays them, without decoding.
        """
        headers = [
            (name, value) for name, value in client_headers
            if name not in _DROP_REQUEST_RAW and not name.startswith(b"x-farebox")
        ]
        headers.extend(self._own_raw)
        pool = self.pool
        return await pool.request(pool.head("POST", path, query, headers, len(body)), body)

    def request_headers(self, client_headers: Mapping[str, str], content_type: str | None = None) -> dict[str, str]:
        """The client's headers minus hop-by-hop and credentials, plus the upstream key."""
        out = {k: v for k, v in client_headers.items() if k.lower() not in _DROP_REQUEST and not k.lower().startswith("x-farebox")}
        out["Authorization"] = self._auth
        if self._organization:
            out["OpenAI-Organization"] = self._organization
        if content_type is not None:
            out["Content-Type"] = content_type
        return out


def key_refused() -> UpstreamError:
    """The answer to relay instead of the upstream's 401, which names (part of) Farebox's own key.

    Relayed as it is, it would show the caller characters of the upstream key, and a 401 would
    make the caller blame its own Farebox key, which was fine.
    """
    log.error("upstream_refused_farebox_key")
    return UpstreamError(
        "The upstream refused Farebox's own API key (yours is fine); the operator must fix it.",
        code="upstream_auth_failed",
    )


def response_headers(upstream_headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in upstream_headers.items() if k.lower() not in _DROP_RESPONSE}
