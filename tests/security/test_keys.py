"""Client keys: long random secrets, kept only as a keyed hash, revoked at once on every replica, expiring."""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import sqlalchemy as sa

from service.auth.keys import hash_key
from tests.conftest import Stack
from tests.harness import Admin, Proc, start_farebox, wait_until
from tests.reliability.results import Recorder
from tests.security.conftest import Secrets, secure_config


def _models(base_url: str, key: str) -> httpx.Response:
    return httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def database_text(database_url: str) -> str:
    """Every row of every table of the database as JSON text, for scanning."""
    engine = sa.create_engine(database_url.replace("+asyncpg", "+psycopg"))
    parts = []
    with engine.connect() as conn:
        tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        for table in tables:
            parts += conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM "{table}" t')).scalars().all()
    engine.dispose()
    return "\n".join(parts)


def test_keys_are_long_random_secrets_stored_only_as_a_keyed_hash(
    secure_stack: Stack, service_secrets: Secrets, record_figures: Recorder,
) -> None:
    team = secure_stack.admin.team()
    minted = [secure_stack.admin.key(team["id"], name=f"k{i}") for i in range(40)]
    secrets_ = [k["key"] for k in minted]
    assert len(set(secrets_)) == 40
    for secret in secrets_:
        assert secret.startswith("fbk_") and len(secret) >= 43
        body = secret[4:]
        # At least 256 bits: 43 characters of the 64-letter URL-safe alphabet.
        assert len(body) * math.log2(64) >= 256
    # Spread over the alphabet: no character dominates 40 keys (a counter or a clock would).
    counts = Counter("".join(s[4:] for s in secrets_))
    assert max(counts.values()) < 0.05 * sum(counts.values())

    for key in secrets_[:3]:  # each works
        assert _models(secure_stack.farebox.base_url, key).status_code == 200
    dump = database_text(secure_stack.config.database_url)
    rows = {r["id"]: r for r in secure_stack.admin.http.get(f"/teams/{team['id']}/keys").json()}
    leaked = 0
    for key, secret in zip(minted, secrets_, strict=True):
        # Only the public prefix may be stored; no 8 characters of the rest appear anywhere in the database.
        assert rows[key["id"]]["prefix"] == secret[:12]
        rest = secret[12:]
        leaked += sum(1 for i in range(len(rest) - 7) if rest[i:i + 8] in dump)
        assert hash_key(secret, service_secrets.pepper) in dump  # what is stored: HMAC-SHA256 with the pepper
        assert hashlib.sha256(secret.encode()).hexdigest() not in dump  # not a bare hash one could look up
    assert service_secrets.pepper not in dump
    record_figures(fault="key storage: 40 keys scanned in every table", requests=40, during=0, ledger_rows=0,
                   leaked_substrings=leaked, differences=leaked)
    assert leaked == 0


def test_revocation_takes_effect_at_once_on_two_replicas(
    simulator: Proc, log_dir: Path, pg_url: str, redis_url: str, service_secrets: Secrets, record_figures: Recorder,
) -> None:
    config = secure_config(simulator, pg_url, redis_url, service_secrets, farebox_auth_cache_ttl_s="300")
    replicas = [start_farebox(config, log_dir) for _ in range(2)]
    try:
        admin_a = Admin(replicas[0].base_url, config.admin_token)
        team = admin_a.team()
        keys = [admin_a.key(team["id"]) for _ in range(5)]
        for key in keys:  # cached on both replicas (for 300 s unless told otherwise)
            for replica in replicas:
                assert _models(replica.base_url, key["key"]).status_code == 200
        latencies = []
        for i, key in enumerate(keys):
            revoke_on, other = (replicas[0], replicas[1]) if i % 2 == 0 else (replicas[1], replicas[0])
            Admin(revoke_on.base_url, config.admin_token).http.post(f"/keys/{key['id']}/revoke").raise_for_status()
            revoked_at = time.monotonic()
            assert _models(revoke_on.base_url, key["key"]).status_code == 401  # the replica that revoked: at once
            wait_until(lambda k=key, o=other: _models(o.base_url, k["key"]).status_code == 401, 2, interval_s=0.01,
                       what="the other replica refusing the revoked key")
            latencies.append(time.monotonic() - revoked_at)
        # A key that was not revoked still works on both.
        survivor = admin_a.key(team["id"])
        assert all(_models(r.base_url, survivor["key"]).status_code == 200 for r in replicas)
        record_figures(fault="key revoked on one of two replicas (300 s auth cache)", requests=len(keys),
                       during=len(keys), ledger_rows=0,
                       other_replica_refuses_within_ms=round(max(latencies) * 1000), differences=0)
        assert max(latencies) < 1.0
    finally:
        for replica in replicas:
            replica.stop()


def test_expired_keys_are_refused_cached_or_not(secure_stack: Stack) -> None:
    team = secure_stack.admin.team()
    past = secure_stack.admin.http.post(f"/teams/{team['id']}/keys", json={"expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and past.json()["error"]["param"] == "expires_at"

    expires = datetime.now(timezone.utc) + timedelta(seconds=2)
    cached = secure_stack.admin.key(team["id"], expires_at=expires.isoformat())
    unused = secure_stack.admin.key(team["id"], expires_at=expires.isoformat())
    assert _models(secure_stack.farebox.base_url, cached["key"]).status_code == 200  # now in the auth cache
    wait_until(lambda: datetime.now(timezone.utc) > expires, 5, what="the expiry")
    for key in (cached, unused):
        after = _models(secure_stack.farebox.base_url, key["key"])
        assert after.status_code == 401 and after.json()["error"]["code"] == "expired_api_key"
        chat = httpx.post(f"{secure_stack.v1}/chat/completions", timeout=10,
                          headers={"Authorization": f"Bearer {key['key']}"},
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
        assert chat.status_code == 401
    assert secure_stack.ledger.rows(team["id"]) == []
