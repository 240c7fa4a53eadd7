"""The console's static bundle, read once from the package and served from memory with ETags."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}

# Every console response: scripts and styles from this origin only, no framing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _asset(body: bytes, suffix: str) -> Asset:
    return Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


@cache
def static_assets() -> dict[str, Asset]:
    """Every file of static/ by name; only these names are ever served (no paths, no traversal)."""
    return {
        p.name: _asset(p.read_bytes(), p.suffix)
        for p in sorted(STATIC.iterdir())
        if p.suffix in _TYPES
    }


@cache
def bundle_version() -> str:
    """A hash of the whole bundle, so a new release never runs against a cached old script."""
    digest = hashlib.sha256()
    for name, asset in static_assets().items():
        digest.update(name.encode() + asset.etag.encode())
    return digest.hexdigest()[:12]


@cache
def page(name: str) -> Asset:
    """A page of templates/ with the bundle version filled in."""
    text = (TEMPLATES / name).read_text(encoding="utf-8").replace("{{version}}", bundle_version())
    return _asset(text.encode(), ".html")
