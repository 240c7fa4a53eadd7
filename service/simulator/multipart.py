"""Stream a multipart/form-data upload straight to a file on disk, never holding it in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from service.simulator.errors import invalid

_MAX_FIELD_BYTES = 64 * 1024


@dataclass
class Upload:
    """The small form fields, and the one file part (written to `path`) if there was one."""

    fields: dict[str, str] = field(default_factory=dict)
    file_field: str | None = None
    filename: str | None = None
    path: Path | None = None
    size: int = 0


class _Parts:
    """python-multipart callbacks: file parts go to disk, other parts to small buffers."""

    def __init__(self, upload: Upload, target: Path) -> None:
        self.upload = upload
        self.target = target
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.field_name = ""
        self.buffer: bytearray | None = None
        self.sink: IO[bytes] | None = None

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.buffer = None
        self.sink = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.field_name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if self.upload.path is not None:
                raise invalid("Only one file may be uploaded per request.", param="file")
            self.upload.file_field = self.field_name
            self.upload.filename = options[b"filename"].decode("utf-8", "replace")
            self.upload.path = self.target
            self.sink = self.target.open("wb")
        else:
            self.buffer = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.sink is not None:
            self.sink.write(data[start:end])
            self.upload.size += end - start
        elif self.buffer is not None:
            if len(self.buffer) + end - start > _MAX_FIELD_BYTES:
                raise invalid(
                    f"Form field {self.field_name!r} is too large.", param=self.field_name
                )
            self.buffer.extend(data[start:end])

    def on_part_end(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        elif self.buffer is not None:
            self.upload.fields[self.field_name] = self.buffer.decode("utf-8", "replace")
            self.buffer = None

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


async def receive_upload(request: Request, target: Path) -> Upload:
    """Parse a multipart/form-data body, writing its file part to target as it arrives."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise invalid("Uploads must be sent as multipart/form-data.")
    upload = Upload()
    parts = _Parts(upload, target)
    callbacks = {
        name: getattr(parts, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        parts.close()
        target.unlink(missing_ok=True)
        if isinstance(exc, MultipartParseError):
            raise invalid(f"Malformed multipart body: {exc}") from None
        raise
    return upload
