from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import yaml

from pricing.catalog import Catalog, catalog_bytes, load_catalog
from pricing.errors import CatalogError, InexactRateError
from pricing.money import nano_per_token_to_usd_per_1k

AUG_2023 = datetime(2023, 9, 1, tzinfo=UTC)
DEC_2023 = datetime(2023, 12, 1, tzinfo=UTC)
MID_2025 = datetime(2025, 6, 1, tzinfo=UTC)


def rates(model: str, *, ft: bool, at: datetime, snapshot: str | None = None) -> tuple:
    r = load_catalog().rates_for(model, fine_tuned=ft, at=at, snapshot=snapshot)
    assert r is not None, (model, ft, at, snapshot)
    return (r.input, r.cached_input, r.output, r.training)


# (model, fine_tuned, snapshot, at) -> (input, cached_input, output, training) in nUSD per token
PUBLISHED = [
    (("gpt-3.5-turbo", True, "0613", AUG_2023), (12_000, None, 16_000, 8_000)),
    (("gpt-3.5-turbo", True, "1106", DEC_2023), (3_000, None, 6_000, 8_000)),
    (("gpt-3.5-turbo", True, "0125", MID_2025), (3_000, None, 6_000, 8_000)),
    (("babbage-002", True, None, AUG_2023), (1_600, None, 1_600, 400)),
    (("babbage-002", False, None, AUG_2023), (400, None, 400, None)),
    (("davinci-002", True, None, AUG_2023), (12_000, None, 12_000, 6_000)),
    (("davinci-002", False, None, AUG_2023), (2_000, None, 2_000, None)),
    (("gpt-4o-mini", True, "2024-07-18", MID_2025), (300, 150, 1_200, 3_000)),
    (("gpt-4o-mini", False, None, MID_2025), (150, 75, 600, None)),
    (("gpt-4o", True, "2024-08-06", MID_2025), (3_750, 1_875, 15_000, 25_000)),
    (("gpt-4o", False, "2024-08-06", MID_2025), (2_500, 1_250, 10_000, None)),
    (("gpt-4.1", True, None, MID_2025), (3_000, 750, 12_000, 25_000)),
    (("gpt-4.1", False, None, MID_2025), (2_000, 500, 8_000, None)),
    (("gpt-4.1-mini", True, None, MID_2025), (800, 200, 3_200, 5_000)),
    (("gpt-4.1-mini", False, None, MID_2025), (400, 100, 1_600, None)),
    (("gpt-4.1-nano", True, None, MID_2025), (200, 50, 800, 1_500)),
    (("gpt-4.1-nano", False, None, MID_2025), (100, 25, 400, None)),
    (("gpt-3.5-turbo", False, "0125", MID_2025), (500, None, 1_500, None)),
    (("text-embedding-3-small", False, None, MID_2025), (20, None, None, None)),
    (("text-embedding-3-large", False, None, MID_2025), (130, None, None, None)),
    (("text-embedding-ada-002", False, None, MID_2025), (100, None, None, None)),
]


@pytest.mark.parametrize(
    ("key", "expected"), PUBLISHED, ids=[f"{k[0]}-{k[1]}-{k[2]}" for k, _ in PUBLISHED]
)
def test_published_figures(key: tuple, expected: tuple) -> None:
    model, ft, snapshot, at = key
    assert rates(model, ft=ft, at=at, snapshot=snapshot) == expected


def test_loaded_once_with_a_versioned_hash() -> None:
    first = load_catalog()
    assert first is load_catalog()
    declared = yaml.safe_load(catalog_bytes())["version"]
    assert first.version.startswith(f"{declared}+")
    assert len(first.version) <= 64  # fits ledger.catalog_version
    r = first.rates_for("gpt-4o", fine_tuned=False, at=MID_2025)
    assert r is not None and r.catalog_version == first.version


def test_every_entry_round_trips_to_its_published_string() -> None:
    for entry in load_catalog().entries:
        for component, text in entry.usd_per_1k:
            nano = getattr(entry, component)
            assert Decimal(nano_per_token_to_usd_per_1k(nano)) == Decimal(text), (entry, component)


def test_every_entry_has_a_source_url() -> None:
    for entry in load_catalog().entries:
        assert "https://" in entry.source


def test_fine_tuned_gpt35_switches_at_devday() -> None:
    assert (
        load_catalog().rates_for(
            "gpt-3.5-turbo", fine_tuned=True, at=datetime(2023, 8, 21, 23, 59, tzinfo=UTC)
        )
        is None
    )
    assert rates("gpt-3.5-turbo", ft=True, at=datetime(2023, 8, 22, tzinfo=UTC)) == (
        12_000,
        None,
        16_000,
        8_000,
    )
    assert (
        rates("gpt-3.5-turbo", ft=True, at=datetime(2023, 11, 5, 23, 59, tzinfo=UTC))[0] == 12_000
    )
    assert rates("gpt-3.5-turbo", ft=True, at=datetime(2023, 11, 6, tzinfo=UTC))[0] == 3_000
    # 23:30 in New York on 5 November is already 6 November in UTC.
    new_york = timezone(timedelta(hours=-5))
    assert (
        rates("gpt-3.5-turbo", ft=True, at=datetime(2023, 11, 5, 23, 30, tzinfo=new_york))[0]
        == 3_000
    )
    # A naive datetime is read as UTC.
    assert rates("gpt-3.5-turbo", ft=True, at=datetime(2023, 11, 5, 23, 30))[0] == 12_000


def test_snapshot_series_beats_the_alias_where_prices_differ() -> None:
    sept_2024 = datetime(2024, 9, 1, tzinfo=UTC)
    assert rates("gpt-4o", ft=False, at=sept_2024) == (5_000, None, 15_000, None)
    assert rates("gpt-4o", ft=False, at=sept_2024, snapshot="2024-08-06") == (
        2_500,
        None,
        10_000,
        None,
    )
    assert (
        rates("gpt-4o", ft=False, at=datetime(2024, 10, 1, tzinfo=UTC), snapshot="2024-08-06")[1]
        == 1_250
    )
    assert rates("gpt-4o", ft=False, at=datetime(2024, 10, 2, tzinfo=UTC)) == (
        2_500,
        1_250,
        10_000,
        None,
    )
    assert rates("gpt-4o", ft=False, at=MID_2025, snapshot="2024-05-13") == (
        5_000,
        None,
        15_000,
        None,
    )


def test_snapshot_without_a_period_yet_falls_back_to_the_alias() -> None:
    cat = load_catalog()
    early = cat.rates_for(
        "gpt-3.5-turbo", fine_tuned=False, at=datetime(2023, 7, 1, tzinfo=UTC), snapshot="0301"
    )
    assert early is not None and early.snapshot is None and early.input == 1_500
    before_0125 = cat.rates_for(
        "gpt-3.5-turbo", fine_tuned=False, at=datetime(2024, 1, 1, tzinfo=UTC), snapshot="0125"
    )
    assert before_0125 is not None and before_0125.snapshot is None and before_0125.input == 1_000
    pinned = cat.rates_for("gpt-3.5-turbo", fine_tuned=False, at=MID_2025, snapshot="0613")
    assert pinned is not None and pinned.snapshot == "0613" and pinned.input == 1_500


def test_rates_carry_date_source_and_limits() -> None:
    r = load_catalog().rates_for("gpt-3.5-turbo", fine_tuned=True, at=AUG_2023, snapshot="0613")
    assert r is not None
    assert r.effective_from == date(2023, 8, 22)
    assert "gpt-3-5-turbo-fine-tuning" in r.source
    assert r.limits.context_window == 4096 and r.limits.training_example_limit == 4096


def test_limits() -> None:
    cat = load_catalog()
    assert cat.limits_for("gpt-3.5-turbo").context_window == 16385  # type: ignore[union-attr]
    assert cat.limits_for("gpt-3.5-turbo", "0613").training_example_limit == 4096  # type: ignore[union-attr]
    assert cat.limits_for("gpt-3.5-turbo", "0125").training_example_limit == 16385  # type: ignore[union-attr]
    assert cat.limits_for("gpt-4o-mini").training_example_limit == 65536  # type: ignore[union-attr]
    assert cat.limits_for("gpt-4o", "2024-05-13").max_output_tokens == 4096  # type: ignore[union-attr]
    assert cat.limits_for("gpt-4o", "2024-08-06").max_output_tokens == 16384  # type: ignore[union-attr]
    assert cat.limits_for("gpt-4.1").context_window == 1_047_576  # type: ignore[union-attr]
    assert cat.limits_for("babbage-002").training_format == "completion"  # type: ignore[union-attr]
    assert cat.limits_for("text-embedding-3-small").max_output_tokens == 0  # type: ignore[union-attr]
    for model in cat.models:
        limits = cat.limits_for(model)
        assert limits is not None
        expected = "o200k_base" if model.startswith(("gpt-4o", "gpt-4.1")) else "cl100k_base"
        assert limits.encoding == expected, model


def test_unknown_model_has_no_rates() -> None:
    cat = load_catalog()
    assert cat.rates_for("o3-mini", fine_tuned=False, at=MID_2025) is None
    assert cat.limits_for("o3-mini") is None
    assert cat.rates_for("gpt-4", fine_tuned=True, at=MID_2025) is None
    assert not cat.fine_tunable("gpt-4") and cat.fine_tunable("gpt-4o-mini")


def test_history_is_ordered() -> None:
    history = load_catalog().history("gpt-3.5-turbo", fine_tuned=True)
    assert [h.effective_from for h in history] == [date(2023, 8, 22), date(2023, 11, 6)]


# --- Catalog.from_mapping refuses malformed files -------------------------------------------

BASE: dict[str, Any] = {
    "version": "t1",
    "sources": {"s": "test source https://example.invalid"},
    "models": {
        "m": {
            "encoding": "cl100k_base",
            "context_window": 100,
            "max_output_tokens": 10,
            "training_format": "chat",
            "rates": [
                {"from": date(2024, 1, 1), "input": "0.001", "output": "0.002", "source": "s"}
            ],
        }
    },
}


def with_rate(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["models"]["m"]["rates"][0].update(changes)
    return data


def test_a_minimal_mapping_loads() -> None:
    cat = Catalog.from_mapping(BASE)
    r = cat.rates_for("m", fine_tuned=False, at=MID_2025)
    assert r is not None and (r.input, r.output, r.catalog_version) == (1_000, 2_000, "t1")


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (with_rate(input=0.001), InexactRateError, "decimal strings"),
        (with_rate(input="0.0000001"), InexactRateError, "whole number"),
        (with_rate(source="nope"), CatalogError, "source"),
        (with_rate(training="0.008"), CatalogError, "fine_tuned"),
        (with_rate(**{"from": "2024-01-01"}), CatalogError, "date"),
        (with_rate(colour="red"), CatalogError, "unknown rate keys"),
        (with_rate(snapshot=613), CatalogError, "quoted"),
    ],
)
def test_malformed_rates_are_refused(
    data: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Catalog.from_mapping(data)


def test_duplicate_periods_and_bad_limits_are_refused() -> None:
    data = copy.deepcopy(BASE)
    data["models"]["m"]["rates"].append(dict(data["models"]["m"]["rates"][0]))
    with pytest.raises(CatalogError, match="two periods"):
        Catalog.from_mapping(data)
    data = copy.deepcopy(BASE)
    data["models"]["m"]["encoding"] = "p50k_base"
    with pytest.raises(CatalogError, match="encoding"):
        Catalog.from_mapping(data)
    data = copy.deepcopy(BASE)
    del data["models"]["m"]["context_window"]
    with pytest.raises(CatalogError, match="context_window"):
        Catalog.from_mapping(data)
    data = copy.deepcopy(BASE)
    data["models"]["m"]["snapshots"] = {"0101": {"input": "0.1"}}
    with pytest.raises(CatalogError, match="only limits"):
        Catalog.from_mapping(data)
