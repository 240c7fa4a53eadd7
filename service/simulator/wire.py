"""Bytes on the wire: ids, JSON and SSE framing, and the headers every OpenAI response carries."""

from __future__ import annotations

import os
import random
import string
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.simulator.errors import ApiError, invalid

_ALNUM = string.ascii_letters + string.digits
_rand = random.Random()
JSON_TYPE = b"application/json"
SSE_TYPE = b"text/event-stream; charset=utf-8"
DONE = b"data: [DONE]\n\n"


def new_id(prefix: str, length: int = 24) -> str:
    """An id like the API's: prefix plus random letters and digits (chatcmpl-, file-, ftjob-)."""
    return prefix + "".join(_rand.choices(_ALNUM, k=length))


def request_id() -> str:
    return "req_" + os.urandom(16).hex()


def json_response(payload: Any, status: int = 200) -> Response:
    return raw_json(orjson.dumps(payload), status)


class JsonBody(Response):
    """A ready JSON body; skips Response.__init__, which re-derives headers on every call."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-type", JSON_TYPE),
            (b"content-length", str(len(body)).encode()),
        ]


def raw_json(body: bytes, status: int = 200) -> Response:
    return JsonBody(body, status)


def error_response(error: ApiError) -> Response:
    response = raw_json(error.body(), error.status)
    for name, value in error.headers.items():
        response.raw_headers.append((name.encode(), value.encode()))
    return response


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or the 400 the API answers for anything else."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
            "was "
            "sent was not valid JSON.)"
        ) from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def common_headers(organization: str) -> list[tuple[bytes, bytes]]:
    """Headers the API sends on every answer besides x-request-id and openai-processing-ms."""
    return [
        (b"openai-version", b"2020-10-01"),
        (b"openai-organization", organization.encode()),
        (b"x-ratelimit-limit-requests", b"30000"),
        (b"x-ratelimit-limit-tokens", b"150000000"),
        (b"x-ratelimit-remaining-requests", b"29999"),
        (b"x-ratelimit-remaining-tokens", b"149999000"),
        (b"x-ratelimit-reset-requests", b"2ms"),
        (b"x-ratelimit-reset-tokens", b"0s"),
    ]


def int_param(body: dict[str, Any], name: str, *, minimum: int = 0) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(
            f"Invalid '{name}': expected an integer >= {minimum}.", param=name, code="invalid_value"
        )
    return value
