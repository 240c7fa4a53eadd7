"""POST /v1/embeddings: unit vectors derived from each input, as floats or base64 float32."""

from __future__ import annotations

import base64
import random
import zlib
from array import array
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.simulator import wire
from service.simulator.errors import ApiError, invalid
from service.simulator.tokens import count_text

if TYPE_CHECKING:
    from service.simulator.state import Simulator

_POOL = 8192
_MAX_INPUT_TOKENS = 8192
_MAX_INPUTS = 2048


@lru_cache(maxsize=8)
def _pool(dimensions: int) -> bytes:
    """float32 values of +-1/sqrt(d); any d-long window of them is a unit vector."""
    rng = random.Random(dimensions)
    scale = dimensions**-0.5
    return array(
        "f", (scale if rng.random() < 0.5 else -scale for _ in range(_POOL + dimensions))
    ).tobytes()


def _vector_bytes(key: bytes, dimensions: int) -> bytes:
    offset = zlib.crc32(key) % _POOL
    return _pool(dimensions)[offset * 4 : (offset + dimensions) * 4]


def _inputs(raw: Any) -> list[str | list[int]]:
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise invalid("'input' must be a non-empty string or array.", param="input")
    if len(items) > _MAX_INPUTS:
        raise invalid(f"'input' must have at most {_MAX_INPUTS} items.", param="input")
    for item in items:
        ok = (isinstance(item, str) and item) or (
            isinstance(item, list) and item and all(isinstance(t, int) for t in item)
        )
        if not ok:
            raise invalid("'input' items must be non-empty strings or token arrays.", param="input")
    return items


def _not_for_embeddings(name: str) -> ApiError:
    return ApiError(400, f"The model `{name}` does not support embeddings.", param="model")


async def create(sim: Simulator, request: Request) -> Response:
    body = await wire.read_json(request)
    info = sim.catalog.requested(body, "embedding", _not_for_embeddings)
    if info.dimensions is None:
        raise _not_for_embeddings(info.id)
    items = _inputs(body.get("input"))
    dimensions = wire.int_param(body, "dimensions", minimum=1)
    if dimensions is not None:
        if not info.id.startswith("text-embedding-3"):
            raise invalid("This model does not support specifying dimensions.", param="dimensions")
        if dimensions > info.dimensions:
            raise invalid(f"'dimensions' must be at most {info.dimensions}.", param="dimensions")
    dims = dimensions or info.dimensions
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise invalid("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")

    tokens = 0
    data = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            count = (
                sim.config.fast_prompt_tokens
                if sim.config.fast
                else count_text(item, info.encoding)
            )
            key = item.encode("utf-8", "surrogatepass")
        else:
            count = len(item)
            key = orjson.dumps(item)
        if count > _MAX_INPUT_TOKENS:
            raise invalid(
                f"This model's maximum context length is {_MAX_INPUT_TOKENS} tokens, however you "
                f"requested {count} tokens in the input. Please reduce your input.",
                param="input",
            )
        tokens += count
        raw = _vector_bytes(key, dims)
        vector: Any = (
            base64.b64encode(raw).decode() if fmt == "base64" else array("f", raw).tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": vector})
    payload = {
        "object": "list",
        "data": data,
        "model": info.answer,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return wire.raw_json(orjson.dumps(payload))
