"""Farebox client keys: long random secrets, shown once, stored only as a keyed hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "fbk_"
_SECRET_BYTES = 32  # 256 bits of entropy


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly minted key: the secret goes to the caller once, the hash to the database."""

    secret: str
    key_hash: str
    prefix: str


def hash_key(secret: str, pepper: str) -> str:
    """HMAC-SHA256 with a server-side pepper: a leaked table alone cannot be used to guess keys."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def mint_key(pepper: str) -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
    return NewKey(secret=secret, key_hash=hash_key(secret, pepper), prefix=secret[:12])


def new_id(kind: str) -> str:
    """Opaque public ids like team_3f9a..., key_..., bud_..."""
    return f"{kind}_{secrets.token_hex(10)}"


def redact(secret: str) -> str:
    """What may appear in logs: the public prefix only."""
    return secret[:8] + "…" if secret else ""
