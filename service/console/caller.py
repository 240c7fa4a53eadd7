"""Who is using the console: the admin (every team) or one team through one of its keys."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from service.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in side of a console request; team_id is None only for the admin."""

    role: str  # admin | team
    team_id: str | None
    team_name: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def identify(request: Request) -> Caller:
    """The admin token makes an admin; anything else must be a valid team key (401 otherwise)."""
    rt: Runtime = request.app.state.runtime
    # A throttled client is refused before the admin token is compared, so guessing learns nothing.
    rt.auth.check_throttle(request.client.host if request.client else "unknown")
    expected = rt.settings.admin_token
    token = _bearer(request)
    if (
        expected is not None
        and token is not None
        and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
    ):
        return Caller("admin", None, None)
    principal = await rt.authenticate(request)
    return Caller("team", principal.team_id, principal.team_name)


async def scoped_team(request: Request, caller: Caller, team: str | None) -> str | None:
    """The team a read is confined to: always the key's own team; the admin may name one (or none: all)."""
    if not caller.is_admin:
        return caller.team_id  # a team key sees its own team whatever the query asks
    if not team:
        return None
    rt: Runtime = request.app.state.runtime
    return (await rt.admin.get_team(team)).id
