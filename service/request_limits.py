"""Size limits every request meets before a route reads it: its head (431) and, off /v1, its body (413).

httptools accepts heads of any size, and FastAPI reads and parses a body before the admin
token is checked, so without these an anonymous client could make a worker hold gigabytes.
The /v1 routes stream their bodies and count them against FAREBOX_MAX_BODY_BYTES (or the
upload limit) themselves; only their declared length is checked here.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, FareboxError

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; nginx's default is 32 KiB
MAX_OTHER_BODY_BYTES = 1024 * 1024  # admin, console and report bodies are small JSON documents
_UPLOADS = "/v1/files"
_MULTIPART_SLACK = 64 * 1024


class HeadTooLarge(FareboxError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class RequestLimits:
    """Pure ASGI middleware; refusals are OpenAI-shaped and sent without reading the body."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        if head > MAX_HEAD_BYTES:
            await _refuse(send, HeadTooLarge(f"The request's headers are {head} bytes; the limit is {MAX_HEAD_BYTES} bytes."))
            return
        path: str = scope["path"]
        limit = MAX_OTHER_BODY_BYTES
        if path.startswith("/v1/"):
            limit = self.max_upload_bytes if path.startswith(_UPLOADS) else self.max_body_bytes
        declared = _content_length(scope["headers"])
        # An upload's multipart framing (boundaries, small fields) may take a little beyond its file.
        slack = _MULTIPART_SLACK if path.startswith(_UPLOADS) else 0
        if declared is not None and declared > limit + slack:
            await _refuse(send, BodyTooLarge(f"The request body is {declared} bytes; the limit is {limit} bytes."))
            return
        if path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        # Read the (small) body here, so a route never parses more than the limit.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)  # a disconnect: pass it on
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, BodyTooLarge(f"The request body exceeds the limit of {limit} bytes."))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replayed


async def _refuse(send: Send, error: FareboxError) -> None:
    body = error.body_bytes()
    await send({
        "type": "http.response.start",
        "status": error.status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})
