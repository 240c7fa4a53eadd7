"""Receive a multipart upload onto a spool file on disk while its JSONL is validated, in bounded memory.

The event loop only parses the multipart framing; writing the spool file and validating the
bytes run in a worker thread, fed through a small bounded queue, so an upload of any size
holds at most a few MiB and never blocks other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from pricing import TrainingFileReport, TrainingFileValidator
from service.errors import BodyTooLarge, InvalidRequest

FLUSH_BYTES = 1024 * 1024  # file bytes handed to the worker thread at a time
QUEUE_DEPTH = 4  # flushes in flight: bounds memory at about (QUEUE_DEPTH + 1) x FLUSH_BYTES
MAX_FIELD_BYTES = 64 * 1024
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself


@dataclass
class SpooledUpload:
    """The small form fields, and the one file part, written to `path` and validated as it arrived."""

    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str | None = None
    content_type: str | None = None
    path: Path | None = None
    size: int = 0
    report: TrainingFileReport | None = None

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def spool_dir(configured: Path | None) -> Path:
    """Where uploads wait on disk: FAREBOX_SPOOL_DIR, or a farebox-spool folder in the temp dir."""
    directory = configured or Path(tempfile.gettempdir()) / "farebox-spool"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


class _Sink:
    """Runs in a worker thread: appends file bytes to the spool and feeds them to the validator."""

    def __init__(self, path: Path, validate: bool) -> None:
        self.handle: IO[bytes] = path.open("wb")
        self.validator = TrainingFileValidator() if validate else None

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        if self.validator is not None:
            self.validator.feed_bytes(data)

    def finish(self) -> TrainingFileReport | None:
        self.handle.close()
        return self.validator.finish() if self.validator is not None else None

    def close(self) -> None:
        self.handle.close()


class _Parts:
    """python-multipart callbacks: the file part's bytes collect in `pending`, fields in small buffers."""

    def __init__(self, upload: SpooledUpload, limit: int) -> None:
        self.upload = upload
        self.limit = limit
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.field_name = ""
        self.buffer: bytearray | None = None
        self.in_file = False
        self.file_started = False
        self.file_done = False
        self.pending = bytearray()

    def on_part_begin(self) -> None:
        self.headers = {}
        self.buffer = None
        self.in_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.strip().lower()] = self.header_value.strip()
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.field_name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            self.buffer = bytearray()
            return
        if self.file_started:
            raise InvalidRequest("Only one file may be uploaded per request.", param="file")
        self.file_started = self.in_file = True
        self.upload.file_field = self.field_name
        self.upload.filename = options[b"filename"].decode("utf-8", "replace")
        content_type = self.headers.get(b"content-type")
        self.upload.content_type = content_type.decode("latin-1") if content_type else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise BodyTooLarge(f"The file exceeds the upload limit of {self.limit} bytes.")
            self.pending += data[start:end]
        elif self.buffer is not None:
            if len(self.buffer) + end - start > MAX_FIELD_BYTES:
                raise InvalidRequest(f"Form field {self.field_name!r} is too large.", param=self.field_name)
            self.buffer += data[start:end]

    def on_part_end(self) -> None:
        if self.in_file:
            self.in_file = False
            self.file_done = True
        elif self.buffer is not None:
            self.upload.fields[self.field_name] = self.buffer.decode("utf-8", "replace")
            self.buffer = None


async def receive_upload(request: Request, directory: Path, *, limit: int, validate_jsonl: bool = True) -> SpooledUpload:
    """Parse a multipart/form-data body, spooling its file part to disk and validating it on the way.

    The file's JSONL is validated only when `validate_jsonl` and the purpose (if it came before
    the file) is fine-tune; a purpose sent after the file is validated speculatively.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Uploads must be sent as multipart/form-data.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise BodyTooLarge(f"The upload is {int(declared)} bytes; the limit is {limit} bytes.")

    upload = SpooledUpload()
    parts = _Parts(upload, limit)
    parser = MultipartParser(boundary, {  # type: ignore[arg-type]
        name: getattr(parts, name)
        for name in ("on_part_begin", "on_header_field", "on_header_value", "on_header_end",
                     "on_headers_finished", "on_part_data", "on_part_end")
    })
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_DEPTH)
    sink: _Sink | None = None
    writer: asyncio.Task[TrainingFileReport | None] | None = None

    async def drain(s: _Sink) -> TrainingFileReport | None:
        while (chunk := await queue.get()) is not None:
            await asyncio.to_thread(s.write, chunk)
        return await asyncio.to_thread(s.finish)

    async def hand_over(final: bool) -> None:
        if not parts.pending and not final:
            return
        assert writer is not None
        if parts.pending:
            chunk, parts.pending = bytes(parts.pending), bytearray()
            await _put(queue, writer, chunk)
        if final:
            await _put(queue, writer, None)

    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            parser.write(chunk)
            if parts.file_started and upload.path is None:
                upload.path = directory / f"upload-{secrets.token_hex(12)}.part"
                purpose = upload.fields.get("purpose")
                sink = _Sink(upload.path, validate_jsonl and purpose in (None, "fine-tune"))
                writer = asyncio.create_task(drain(sink))
            if sink is not None and (len(parts.pending) >= FLUSH_BYTES or parts.file_done):
                await hand_over(final=parts.file_done)
                if parts.file_done:
                    upload.report = await writer  # type: ignore[misc]
                    sink = None
        parser.finalize()
        if sink is not None:  # the body ended inside the file part
            raise InvalidRequest("Malformed multipart body: the file part was not terminated.")
    except BaseException as exc:
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        if sink is not None:
            sink.close()
        upload.discard()
        if isinstance(exc, MultipartParseError):
            raise InvalidRequest(f"Malformed multipart body: {exc}") from None
        if isinstance(exc, ClientDisconnect):
            raise InvalidRequest("The client disconnected before the upload was complete.") from None
        raise
    return upload


async def _put(queue: asyncio.Queue[bytes | None], writer: asyncio.Task[object], item: bytes | None) -> None:
    """Queue an item for the writer, or surface the writer's failure (disk full) instead of waiting forever."""
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
    if put not in done:
        put.cancel()
        writer.result()  # raises the writer's error
        raise RuntimeError("the spool writer stopped before the upload was complete")
