"""Bearer token -> Principal, with a short in-process cache and failed-attempt throttling.

Revocation reaches every replica at once through the change bus, which drops cached keys.
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict, deque
from datetime import datetime, timezone

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.auth.keys import hash_key
from service.auth.principal import Principal
from service.db.models import ApiKey, Team
from service.errors import AuthenticationFailed, TooManyAuthFailures

_CACHE_MAX = 10_000
_STALE_RETRY_S = 5.0

log = structlog.get_logger(__name__)


class Authenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        pepper: str,
        cache_ttl_s: float,
        fail_limit: int,
        fail_window_s: float,
    ) -> None:
        self._sessions = sessions
        self._pepper = pepper
        self._ttl = cache_ttl_s
        self._fail_limit = fail_limit
        self._fail_window = fail_window_s
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._failures: dict[str, deque[float]] = {}

    async def authenticate(self, authorization: str | None, client: str) -> Principal:
        """Resolve an `Authorization: Bearer ...` header, or raise a 401 (429 when throttled)."""
        self.check_throttle(client)
        token = _bearer(authorization)
        if token is None:
            self.record_failure(client)
            raise AuthenticationFailed(
                "You didn't provide an API key. Send your Farebox key as "
                "'Authorization: Bearer fbk_...'.",
                code="missing_api_key",
            )
        key_hash = hash_key(token, self._pepper)
        now = time.monotonic()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[1] > now:
            principal = cached[0]
        else:
            try:
                principal = await self._load(key_hash)
                ttl = self._ttl
            except Exception as exc:
                if cached is None:
                    raise
                # The database is away: a key this replica already knew keeps working (a revocation
                # still drops it through the change bus); ask the database again in a few seconds.
                log.warning("auth_database_unavailable_serving_cached_key", error=type(exc).__name__)
                principal, ttl = cached[0], min(self._ttl, _STALE_RETRY_S)
            if principal is None:
                self.record_failure(client)
                raise AuthenticationFailed("Incorrect API key provided: the key is unknown or revoked.")
            self._remember(key_hash, principal, now, ttl)
        if principal.expires_at is not None and principal.expires_at <= datetime.now(timezone.utc):
            self.forget_hash(key_hash)
            raise AuthenticationFailed("The API key provided has expired.", code="expired_api_key")
        return principal

    async def _load(self, key_hash: str) -> Principal | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, Team)
                    .join(Team, Team.id == ApiKey.team_id)
                    .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
                )
            ).first()
        if row is None:
            return None
        key, team = row
        # The lookup is by an unguessable hash; compare again in constant time for good measure.
        if not hmac.compare_digest(key.key_hash, key_hash):
            return None
        expires = key.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        return Principal(
            team_id=team.id,
            team_name=team.name,
            key_id=key.id,
            key_hash=key_hash,
            expires_at=expires,
            validate_training_files=team.validate_training_files,
        )

    def _remember(self, key_hash: str, principal: Principal, now: float, ttl: float) -> None:
        self._cache[key_hash] = (principal, now + ttl)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > _CACHE_MAX:
            self._cache.popitem(last=False)

    def forget_hash(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)

    def forget_key(self, key_id: str) -> None:
        for h, (p, _) in list(self._cache.items()):
            if p.key_id == key_id:
                self._cache.pop(h, None)

    def forget_team(self, team_id: str) -> None:
        for h, (p, _) in list(self._cache.items()):
            if p.team_id == team_id:
                self._cache.pop(h, None)

    def check_throttle(self, client: str) -> None:
        """Raise a 429 when this client failed too often lately (keys, the admin token, the console alike)."""
        window = self._failures.get(client)
        if not window:
            return
        cutoff = time.monotonic() - self._fail_window
        while window and window[0] < cutoff:
            window.popleft()
        if len(window) >= self._fail_limit:
            retry = max(1, int(window[0] + self._fail_window - time.monotonic()) + 1)
            raise TooManyAuthFailures(
                "Too many failed authentication attempts from this client; try again later.",
                headers={"Retry-After": str(retry)},
            )

    def record_failure(self, client: str) -> None:
        window = self._failures.setdefault(client, deque())
        window.append(time.monotonic())
        if len(self._failures) > _CACHE_MAX:
            self._failures.pop(next(iter(self._failures)))


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
