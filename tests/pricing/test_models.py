from __future__ import annotations

import pytest

from pricing.models import ResolvedModel, resolve_model

# name -> (base_model, snapshot, fine_tuned, known)
TABLE = {
    "gpt-3.5-turbo": ("gpt-3.5-turbo", None, False, True),
    "gpt-3.5-turbo-0125": ("gpt-3.5-turbo", "0125", False, True),
    "gpt-3.5-turbo-0613": ("gpt-3.5-turbo", "0613", False, True),
    "gpt-3.5-turbo-16k-0613": ("gpt-3.5-turbo-16k", "0613", False, True),
    "gpt-4-0613": ("gpt-4", "0613", False, True),
    "gpt-4-1106-preview": ("gpt-4-turbo", "1106-preview", False, True),
    "gpt-4-turbo-2024-04-09": ("gpt-4-turbo", "2024-04-09", False, True),
    "gpt-4o": ("gpt-4o", None, False, True),
    "gpt-4o-2024-08-06": ("gpt-4o", "2024-08-06", False, True),
    "gpt-4o-mini-2024-07-18": ("gpt-4o-mini", "2024-07-18", False, True),
    "gpt-4.1-2025-04-14": ("gpt-4.1", "2025-04-14", False, True),
    "gpt-4.1-mini-2025-04-14": ("gpt-4.1-mini", "2025-04-14", False, True),
    "gpt-4.1-nano": ("gpt-4.1-nano", None, False, True),
    "text-embedding-3-small": ("text-embedding-3-small", None, False, True),
    "davinci-002": ("davinci-002", None, False, True),
    "ft:gpt-3.5-turbo-0613:acme:support:8abc": ("gpt-3.5-turbo", "0613", True, True),
    "ft:gpt-3.5-turbo-0613:acme::x": ("gpt-3.5-turbo", "0613", True, True),
    "ft:gpt-3.5-turbo-1106:acme::y": ("gpt-3.5-turbo", "1106", True, True),
    "ft:gpt-4o-mini-2024-07-18:org::abc123": ("gpt-4o-mini", "2024-07-18", True, True),
    "ft:gpt-4o-2024-08-06:org:bot:abc123:ckpt-step-88": ("gpt-4o", "2024-08-06", True, True),
    "ft:babbage-002:acme::z": ("babbage-002", None, True, True),
    "ft:gpt-4-0613:acme::z": ("gpt-4", "0613", True, False),  # no fine-tuned rates listed
    "curie:ft-acme-2023-01-01-00-00-00": ("curie", None, True, False),
    "davinci:ft-acme:my-bot-2023-01-01-00-00-00": ("davinci", None, True, False),
    "ft-AbC123": (None, None, True, False),
    "o3-mini-2025-01-31": ("o3-mini", "2025-01-31", False, False),
    "some-new-model": ("some-new-model", None, False, False),
    "gpt-4o-mini-tts": ("gpt-4o-mini-tts", None, False, False),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_resolution_table(name: str) -> None:
    resolved = resolve_model(name)
    assert (resolved.base_model, resolved.snapshot, resolved.fine_tuned, resolved.known) == TABLE[
        name
    ]
    assert resolved.name == name


def test_fine_tuned_name_parts() -> None:
    r = resolve_model("ft:gpt-3.5-turbo-0613:acme:support:8abc")
    assert (r.organization, r.suffix, r.model_id, r.checkpoint_step) == (
        "acme",
        "support",
        "8abc",
        None,
    )
    r = resolve_model("ft:gpt-3.5-turbo-0613:acme::x")
    assert (r.organization, r.suffix, r.model_id) == ("acme", None, "x")
    r = resolve_model("ft:gpt-4o-mini-2024-07-18:org:sfx:abc123:ckpt-step-88")
    assert (r.suffix, r.model_id, r.checkpoint_step) == ("sfx", "abc123", 88)


def test_legacy_names() -> None:
    r = resolve_model("davinci:ft-acme:my-bot-2023-01-01-00-00-00")
    assert r.legacy and r.organization == "acme" and r.suffix == "my-bot"
    assert resolve_model("ft-AbC123").legacy
    assert not resolve_model("ft:gpt-4o-mini-2024-07-18:org::abc123").legacy


def test_unknown_models_have_no_rates_or_limits() -> None:
    from datetime import UTC, datetime

    r = resolve_model("o3-mini-2025-01-31")
    assert r.rates(datetime(2025, 6, 1, tzinfo=UTC)) is None
    assert r.limits() is None
    assert resolve_model("ft-AbC123").limits() is None


def test_resolved_model_is_frozen() -> None:
    r = resolve_model("gpt-4o")
    assert isinstance(r, ResolvedModel)
    with pytest.raises(AttributeError):
        r.known = False  # type: ignore[misc]
