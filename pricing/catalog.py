"""The rate catalog: published prices per model, fine-tuned or not, snapshot and period."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any

import yaml

from pricing.errors import CatalogError
from pricing.money import usd_per_1k_to_nano_per_token

COMPONENTS = ("input", "cached_input", "output", "training")
ENCODINGS = ("cl100k_base", "o200k_base")
TRAINING_FORMATS = ("chat", "completion", "none")
DEFAULT_IMAGE_TOKENS = 1445  # 85 + 170 x 8 tiles: a high-detail image at its largest
_LIMIT_KEYS = ("context_window", "max_output_tokens", "training_example_limit", "image_tokens")
_MODEL_KEYS = {"encoding", "training_format", "snapshots", "aliases", "rates", *_LIMIT_KEYS}
_RATE_KEYS = {"from", "snapshot", "fine_tuned", "source", *COMPONENTS}


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """What a model accepts: its window, its longest answer, its tokenizer and training limits."""

    context_window: int
    max_output_tokens: int
    encoding: str
    training_example_limit: int | None
    training_format: str  # chat | completion | none
    image_tokens: int


@dataclass(frozen=True, slots=True)
class RateEntry:
    """One price period of the catalog file, converted to nano-USD per token."""

    base_model: str
    snapshot: str | None
    fine_tuned: bool
    effective_from: date
    input: int | None
    cached_input: int | None
    output: int | None
    training: int | None
    source: str
    usd_per_1k: tuple[tuple[str, str], ...]  # the published strings, component by component


@dataclass(frozen=True, slots=True)
class ModelRates:
    """The rates in force for one model at one time, in nano-USD per token (None: not offered)."""

    base_model: str
    snapshot: str | None  # the snapshot whose own series matched, None for the alias series
    fine_tuned: bool
    input: int | None
    cached_input: int | None
    output: int | None
    training: int | None
    effective_from: date
    source: str
    catalog_version: str
    limits: ModelLimits


class Catalog:
    """An immutable, loaded rate catalog; build it with load_catalog() or Catalog.from_mapping()."""

    def __init__(
        self,
        version: str,
        limits: dict[str, ModelLimits],
        snapshot_limits: dict[tuple[str, str], ModelLimits],
        aliases: dict[str, tuple[str, str]],
        entries: tuple[RateEntry, ...],
    ) -> None:
        self.version = version
        self._limits = limits
        self._snapshot_limits = snapshot_limits
        self._aliases = aliases
        self._entries = entries
        series: dict[tuple[str, bool, str | None], list[RateEntry]] = {}
        for entry in entries:
            series.setdefault((entry.base_model, entry.fine_tuned, entry.snapshot), []).append(
                entry
            )
        self._series = {
            key: sorted(rows, key=lambda r: r.effective_from) for key, rows in series.items()
        }

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, version: str | None = None) -> Catalog:
        """Build a catalog from the parsed YAML document; raise CatalogError on a malformed part."""
        return _parse(data, version)

    @property
    def models(self) -> tuple[str, ...]:
        """The base model names, the catalog keys."""
        return tuple(self._limits)

    @property
    def entries(self) -> tuple[RateEntry, ...]:
        return self._entries

    @property
    def aliases(self) -> dict[str, tuple[str, str]]:
        """Full model names that do not follow the base-snapshot pattern -> (base, snapshot)."""
        return dict(self._aliases)

    def alias(self, name: str) -> tuple[str, str] | None:
        """(base, snapshot) for a listed alias such as gpt-4-1106-preview, else None."""
        return self._aliases.get(name)

    def has_model(self, base_model: str) -> bool:
        return base_model in self._limits

    def fine_tunable(self, base_model: str) -> bool:
        """Whether the catalog lists fine-tuned (and so training) rates for this model."""
        return any(key[0] == base_model and key[1] for key in self._series)

    def limits_for(self, base_model: str, snapshot: str | None = None) -> ModelLimits | None:
        """The model's limits with a snapshot's overrides; None for a model not in the catalog."""
        if snapshot is not None and (base_model, snapshot) in self._snapshot_limits:
            return self._snapshot_limits[(base_model, snapshot)]
        return self._limits.get(base_model)

    def history(
        self, base_model: str, *, fine_tuned: bool, snapshot: str | None = None
    ) -> tuple[RateEntry, ...]:
        """Every price period of one series, oldest first."""
        return tuple(self._series.get((base_model, fine_tuned, snapshot), ()))

    def rates_for(
        self, base_model: str, *, fine_tuned: bool, at: datetime, snapshot: str | None = None
    ) -> ModelRates | None:
        """The rates in force at `at`: the snapshot's own series if it has a period by then, else
        the alias series; None when the model is unknown or had no price yet."""
        limits = self.limits_for(base_model, snapshot)
        if limits is None:
            return None
        day = _utc_day(at)
        entry = None
        if snapshot is not None:
            entry = _in_force(self._series.get((base_model, fine_tuned, snapshot), ()), day)
        if entry is None:
            entry = _in_force(self._series.get((base_model, fine_tuned, None), ()), day)
        if entry is None:
            return None
        return ModelRates(
            base_model=base_model,
            snapshot=entry.snapshot,
            fine_tuned=fine_tuned,
            input=entry.input,
            cached_input=entry.cached_input,
            output=entry.output,
            training=entry.training,
            effective_from=entry.effective_from,
            source=entry.source,
            catalog_version=self.version,
            limits=limits,
        )


def _utc_day(at: datetime) -> date:
    # A naive datetime is taken as UTC, the zone every period starts in.
    if at.tzinfo is None:
        return at.date()
    return at.astimezone(UTC).date()


def _in_force(rows: tuple[RateEntry, ...] | list[RateEntry], day: date) -> RateEntry | None:
    found = None
    for row in rows:  # sorted oldest first
        if row.effective_from > day:
            break
        found = row
    return found


def _positive_int(value: Any, what: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise CatalogError(
            f"{what} must be a {'non-negative' if allow_zero else 'positive'} integer"
        )
    return value


def _limits(base: str, spec: dict[str, Any], inherited: ModelLimits | None) -> ModelLimits:
    def pick(key: str, default: Any) -> Any:
        return spec.get(key, default)

    context = _positive_int(
        pick("context_window", inherited and inherited.context_window), f"{base}.context_window"
    )
    max_out = _positive_int(
        pick("max_output_tokens", inherited and inherited.max_output_tokens),
        f"{base}.max_output_tokens",
        allow_zero=True,
    )
    encoding = pick("encoding", inherited and inherited.encoding)
    if encoding not in ENCODINGS:
        raise CatalogError(f"{base}.encoding must be one of {ENCODINGS}, got {encoding!r}")
    fmt = pick("training_format", inherited.training_format if inherited else "none")
    if fmt not in TRAINING_FORMATS:
        raise CatalogError(f"{base}.training_format must be one of {TRAINING_FORMATS}")
    example_limit = pick("training_example_limit", inherited and inherited.training_example_limit)
    if example_limit is not None:
        example_limit = _positive_int(example_limit, f"{base}.training_example_limit")
    image_tokens = _positive_int(
        pick("image_tokens", inherited.image_tokens if inherited else DEFAULT_IMAGE_TOKENS),
        f"{base}.image_tokens",
    )
    return ModelLimits(context, max_out, encoding, example_limit, fmt, image_tokens)


def _entry(base: str, row: Any, sources: dict[str, str]) -> RateEntry:
    if not isinstance(row, dict):
        raise CatalogError(f"{base}: each rate period must be a mapping")
    unknown = set(row) - _RATE_KEYS
    if unknown:
        raise CatalogError(f"{base}: unknown rate keys {sorted(unknown)}")
    effective = row.get("from")
    if not isinstance(effective, date) or isinstance(effective, datetime):
        raise CatalogError(f"{base}: 'from' must be a YYYY-MM-DD date")
    fine_tuned = row.get("fine_tuned", False)
    if not isinstance(fine_tuned, bool):
        raise CatalogError(f"{base}: fine_tuned must be true or false")
    snapshot = row.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, str):
        raise CatalogError(f"{base}: snapshot must be a quoted string")
    source_key = row.get("source")
    if source_key not in sources:
        raise CatalogError(f"{base}: source {source_key!r} is not listed under sources")
    published: dict[str, str] = {}
    nano: dict[str, int | None] = {}
    for component in COMPONENTS:
        text = row.get(component)
        if text is None:
            nano[component] = None
            continue
        nano[component] = usd_per_1k_to_nano_per_token(text)  # refuses floats and inexact rates
        published[component] = text
    if not published:
        raise CatalogError(f"{base}: a rate period must price at least one component")
    if nano["training"] is not None and not fine_tuned:
        raise CatalogError(f"{base}: training rates belong on the fine_tuned series")
    return RateEntry(
        base_model=base,
        snapshot=snapshot,
        fine_tuned=fine_tuned,
        effective_from=effective,
        source=sources[source_key],
        usd_per_1k=tuple(published.items()),
        **nano,
    )


def _parse(data: Any, version: str | None) -> Catalog:
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise CatalogError("the catalog must be a mapping with a 'models' mapping")
    declared = version if version is not None else data.get("version")
    if not isinstance(declared, str) or not declared:
        raise CatalogError("the catalog needs a 'version' string")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise CatalogError("'sources' must map keys to text")
    limits: dict[str, ModelLimits] = {}
    snapshot_limits: dict[tuple[str, str], ModelLimits] = {}
    aliases: dict[str, tuple[str, str]] = {}
    entries: list[RateEntry] = []
    for base, spec in data["models"].items():
        if not isinstance(spec, dict):
            raise CatalogError(f"{base}: model entry must be a mapping")
        unknown = set(spec) - _MODEL_KEYS
        if unknown:
            raise CatalogError(f"{base}: unknown keys {sorted(unknown)}")
        limits[base] = _limits(base, spec, None)
        for snapshot, overrides in (spec.get("snapshots") or {}).items():
            if not isinstance(snapshot, str) or not isinstance(overrides, dict):
                raise CatalogError(f"{base}: snapshots map quoted names to limit overrides")
            if set(overrides) - set(_LIMIT_KEYS):
                raise CatalogError(f"{base}.{snapshot}: only limits can be overridden")
            snapshot_limits[(base, snapshot)] = _limits(base, overrides, limits[base])
        for alias, snapshot in (spec.get("aliases") or {}).items():
            if not isinstance(snapshot, str):
                raise CatalogError(f"{base}: alias {alias} must name a quoted snapshot")
            aliases[alias] = (base, snapshot)
        rows = spec.get("rates")
        if not isinstance(rows, list) or not rows:
            raise CatalogError(f"{base}: needs a non-empty 'rates' list")
        entries.extend(_entry(base, row, sources) for row in rows)
    seen: set[tuple[str, bool, str | None, date]] = set()
    for e in entries:
        key = (e.base_model, e.fine_tuned, e.snapshot, e.effective_from)
        if key in seen:
            raise CatalogError(
                f"{e.base_model}: two periods of one series start on {e.effective_from}"
            )
        seen.add(key)
    return Catalog(declared, limits, snapshot_limits, aliases, tuple(entries))


_lock = threading.Lock()
_loaded: Catalog | None = None


def catalog_bytes() -> bytes:
    """The shipped catalog file, as bytes."""
    return resources.files("pricing").joinpath("data/rates.yaml").read_bytes()


def load_catalog() -> Catalog:
    """The shipped catalog, parsed once per process; its version is the declared version plus a
    hash of the file, so any edit yields a new version for ledger rows to record."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                raw = catalog_bytes()
                data = yaml.safe_load(raw)
                declared = data.get("version") if isinstance(data, dict) else None
                if not isinstance(declared, str) or not declared:
                    raise CatalogError("the catalog needs a 'version' string")
                digest = hashlib.sha256(raw).hexdigest()[:12]
                _loaded = _parse(data, f"{declared}+{digest}")
    return _loaded
