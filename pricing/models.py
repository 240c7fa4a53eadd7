"""Model-name resolution: dated snapshots, fine-tuned and checkpoint names, legacy fine-tunes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from pricing.catalog import Catalog, ModelLimits, ModelRates, load_catalog

# "0613" (gpt-3.5-turbo, gpt-4) or "2024-08-06" (gpt-4o and later).
_SNAPSHOT = re.compile(r"\d{4}|\d{4}-\d{2}-\d{2}")
_TRAILING_SNAPSHOT = re.compile(r"(?P<base>.+?)-(?P<snapshot>\d{4}-\d{2}-\d{2}|\d{4})")
_CHECKPOINT = re.compile(r"ckpt-step-(?P<step>\d+)")
# curie:ft-acme-2023-01-01-00-00-00, davinci:ft-acme:my-suffix-2023-01-01-00-00-00
_LEGACY = re.compile(r"(?P<base>[A-Za-z0-9.\-]+):ft-(?P<rest>.+)")
_LEGACY_REST = re.compile(
    r"(?P<org>[^:]+?)(?::(?P<suffix>.+?))?-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}"
)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """What a model name means for pricing: its catalog key, snapshot and fine-tuned flag."""

    name: str
    base_model: str | None  # the catalog key (or the best guess for an unknown model)
    snapshot: str | None
    fine_tuned: bool
    known: bool  # the catalog can price it: base listed and, when fine-tuned, fine-tunable
    organization: str | None = None
    suffix: str | None = None
    model_id: str | None = None  # the unique id at the end of an ft: name
    checkpoint_step: int | None = None
    legacy: bool = False  # a pre-2023 fine-tune (curie:ft-..., ft-...), retired and unpriced

    def rates(self, at: datetime, catalog: Catalog | None = None) -> ModelRates | None:
        """The rates in force at `at`, or None for an unknown or not-yet-priced model."""
        if not self.known or self.base_model is None:
            return None
        cat = catalog or load_catalog()
        return cat.rates_for(
            self.base_model, fine_tuned=self.fine_tuned, at=at, snapshot=self.snapshot
        )

    def limits(self, catalog: Catalog | None = None) -> ModelLimits | None:
        if self.base_model is None:
            return None
        return (catalog or load_catalog()).limits_for(self.base_model, self.snapshot)


def resolve_model(name: str, catalog: Catalog | None = None) -> ResolvedModel:
    """Resolve any OpenAI model name; an unknown one comes back known=False, never guessed."""
    return _resolve(name, catalog or load_catalog())


@lru_cache(maxsize=4096)
def _resolve(name: str, catalog: Catalog) -> ResolvedModel:
    if name.startswith("ft:"):
        return _fine_tuned(name, catalog)
    if name.startswith("ft-"):
        return ResolvedModel(name, None, None, fine_tuned=True, known=False, legacy=True)
    legacy = _LEGACY.fullmatch(name)
    if legacy:
        rest = _LEGACY_REST.fullmatch(legacy["rest"])
        return ResolvedModel(
            name,
            legacy["base"],
            None,
            fine_tuned=True,
            known=False,
            organization=rest["org"] if rest else None,
            suffix=rest["suffix"] if rest else None,
            legacy=True,
        )
    base, snapshot, known = _base(name, catalog)
    return ResolvedModel(name, base, snapshot, fine_tuned=False, known=known)


def _base(name: str, catalog: Catalog) -> tuple[str, str | None, bool]:
    if catalog.has_model(name):
        return name, None, True
    aliased = catalog.alias(name)
    if aliased:
        return aliased[0], aliased[1], True
    # Longest base first, so gpt-4o-mini-... is not read as gpt-4o with snapshot "mini-...".
    for base in sorted(catalog.models, key=len, reverse=True):
        if name.startswith(base + "-") and _SNAPSHOT.fullmatch(name[len(base) + 1 :]):
            return base, name[len(base) + 1 :], True
    dated = _TRAILING_SNAPSHOT.fullmatch(name)
    if dated:
        return dated["base"], dated["snapshot"], False
    return name, None, False


def _fine_tuned(name: str, catalog: Catalog) -> ResolvedModel:
    # ft:{base}:{org}:{suffix}:{id}[:ckpt-step-N]; suffix may be empty, early names may be shorter.
    parts = name.split(":")
    inner = parts[1] if len(parts) > 1 else ""
    base, snapshot, known = _base(inner, catalog) if inner else (None, None, False)
    checkpoint = None
    fields = parts[2:]
    if fields and (match := _CHECKPOINT.fullmatch(fields[-1])):
        checkpoint = int(match["step"])
        fields = fields[:-1]
    organization = fields[0] or None if len(fields) > 0 else None
    suffix = fields[1] or None if len(fields) > 1 else None
    model_id = fields[2] or None if len(fields) > 2 else None
    return ResolvedModel(
        name,
        base,
        snapshot,
        fine_tuned=True,
        known=known and base is not None and catalog.fine_tunable(base),
        organization=organization,
        suffix=suffix,
        model_id=model_id,
        checkpoint_step=checkpoint,
    )
