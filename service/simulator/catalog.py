"""The models the simulated API serves: kind, tokenizer, and the snapshot name it answers with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from service.simulator.errors import ApiError, invalid, model_not_found

Kind = Literal["chat", "completion", "embedding"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One servable model. `answer` is the name responses carry (the dated snapshot for aliases)."""

    id: str
    kind: Kind
    encoding: str
    answer: str
    created: int = 1_700_000_000
    owned_by: str = "system"
    fine_tunable: bool = False
    reasoning: bool = False
    dimensions: int | None = None
    base: str | None = None  # the snapshot a fine-tuned model was trained from


def _chat(
    alias: str | None, snapshot: str, enc: str, *, ft: bool = False, reasoning: bool = False
) -> list[ModelInfo]:
    models = [ModelInfo(snapshot, "chat", enc, snapshot, fine_tunable=ft, reasoning=reasoning)]
    if alias:
        models.append(ModelInfo(alias, "chat", enc, snapshot, fine_tunable=ft, reasoning=reasoning))
    return models


_O200K, _CL100K = "o200k_base", "cl100k_base"

_BUILTIN: list[ModelInfo] = [
    *_chat("gpt-4o-mini", "gpt-4o-mini-2024-07-18", _O200K, ft=True),
    *_chat("gpt-4o", "gpt-4o-2024-08-06", _O200K, ft=True),
    *_chat(None, "gpt-4o-2024-05-13", _O200K),
    *_chat(None, "gpt-4o-2024-11-20", _O200K),
    *_chat("gpt-4.1", "gpt-4.1-2025-04-14", _O200K, ft=True),
    *_chat("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", _O200K, ft=True),
    *_chat("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", _O200K, ft=True),
    *_chat("gpt-5", "gpt-5-2025-08-07", _O200K, reasoning=True),
    *_chat("gpt-5-mini", "gpt-5-mini-2025-08-07", _O200K, reasoning=True),
    *_chat("gpt-5-nano", "gpt-5-nano-2025-08-07", _O200K, reasoning=True),
    *_chat("o1", "o1-2024-12-17", _O200K, reasoning=True),
    *_chat("o3", "o3-2025-04-16", _O200K, reasoning=True),
    *_chat("o3-mini", "o3-mini-2025-01-31", _O200K, reasoning=True),
    *_chat("o4-mini", "o4-mini-2025-04-16", _O200K, reasoning=True),
    *_chat("gpt-4-turbo", "gpt-4-turbo-2024-04-09", _CL100K),
    *_chat("gpt-4", "gpt-4-0613", _CL100K, ft=True),
    *_chat("gpt-3.5-turbo", "gpt-3.5-turbo-0125", _CL100K, ft=True),
    *_chat(None, "gpt-3.5-turbo-1106", _CL100K, ft=True),
    # Retired for new requests, but fine-tunes of it still serve (and are billed at 2023 rates).
    *_chat(None, "gpt-3.5-turbo-0613", _CL100K, ft=True),
    ModelInfo("gpt-3.5-turbo-instruct", "completion", _CL100K, "gpt-3.5-turbo-instruct"),
    ModelInfo("babbage-002", "completion", _CL100K, "babbage-002", fine_tunable=True),
    ModelInfo("davinci-002", "completion", _CL100K, "davinci-002", fine_tunable=True),
    ModelInfo(
        "text-embedding-3-small", "embedding", _CL100K, "text-embedding-3-small", dimensions=1536
    ),
    ModelInfo(
        "text-embedding-3-large", "embedding", _CL100K, "text-embedding-3-large", dimensions=3072
    ),
    # The real API answers ada-002 requests with this internal name; a proxy has to cope with it.
    ModelInfo(
        "text-embedding-ada-002", "embedding", _CL100K, "text-embedding-ada-002-v2", dimensions=1536
    ),
]


class Catalog:
    """Built-in models plus those jobs create; resolves any model name a request carries."""

    def __init__(self, *, strict_fine_tuned: bool = False) -> None:
        self._models: dict[str, ModelInfo] = {m.id: m for m in _BUILTIN}
        self._fine_tuned: dict[str, ModelInfo] = {}
        self._deleted: set[str] = set()
        self._strict = strict_fine_tuned

    def add_fine_tuned(self, name: str, base: str, created: int, owner: str) -> ModelInfo:
        """Register a model a job produced, so it is listed and served."""
        info = self._fine_tuned_info(name, base, created=created, owned_by=owner)
        self._fine_tuned[name] = info
        self._deleted.discard(name)
        return info

    def delete_fine_tuned(self, name: str) -> bool:
        """Forget a fine-tuned model; it is no longer served, even by name pattern."""
        if self.get(name) is None:
            return False
        self._fine_tuned.pop(name, None)
        self._deleted.add(name)
        return True

    def get(self, name: str) -> ModelInfo | None:
        """The model a request names, or None when the real API would answer model_not_found."""
        info = self._models.get(name) or self._fine_tuned.get(name)
        if info is not None or not name.startswith("ft:") or self._strict or name in self._deleted:
            return info
        parts = name.split(":")
        if len(parts) < 5:
            return None
        base = self._models.get(parts[1])
        if base is None:
            return None
        return self._fine_tuned_info(name, base.answer, created=base.created, owned_by="user")

    def requested(self, body: dict[str, Any], kind: Kind, wrong_kind: Callable[[str], ApiError]) -> ModelInfo:
        """The model a request body names, served by an endpoint for `kind`; OpenAI's errors otherwise
        (`wrong_kind(name)` is the endpoint's own answer to a model of another kind)."""
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise invalid("you must provide a model parameter")
        info = self.get(name)
        if info is None:
            raise model_not_found(name)
        if info.kind != kind:
            raise wrong_kind(name)
        return info

    def listed(self) -> list[ModelInfo]:
        return [*self._models.values(), *self._fine_tuned.values()]

    def _fine_tuned_info(self, name: str, base: str, *, created: int, owned_by: str) -> ModelInfo:
        b = self._models[base]
        return ModelInfo(
            name,
            b.kind,
            b.encoding,
            name,
            created=created,
            owned_by=owned_by,
            fine_tunable=True,
            reasoning=b.reasoning,
            base=b.answer,
        )
