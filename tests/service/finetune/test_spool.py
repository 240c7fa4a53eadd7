"""The streaming multipart receiver: the file lands on disk, validated on the way, fields kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pricing import validate_training_file
from service.errors import FareboxError
from service.finetune.spool import FLUSH_BYTES, receive_upload
from tests.service.finetune.data import lines

LIMIT = 8 * 1024 * 1024


def app(directory: Path) -> Starlette:
    async def upload(request: Request) -> Response:
        try:
            got = await receive_upload(request, directory, limit=LIMIT)
        except FareboxError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        report = got.report
        return JSONResponse({
            "fields": got.fields, "filename": got.filename, "content_type": got.content_type, "size": got.size,
            "spooled": got.path.read_bytes().decode() if got.path else None,
            "report": None if report is None else {
                "examples": report.examples, "tokens": report.billable_tokens,
                "errors": [[e.line, e.reason] for e in report.errors],
            },
        })

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


async def post(directory: Path, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(directory))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/upload", **kwargs)


async def test_a_large_file_is_spooled_whole_and_counted_like_the_validator_does(tmp_path: Path) -> None:
    content = b"".join(lines(8_000))
    assert len(content) > 2 * FLUSH_BYTES  # several hand-overs to the worker thread
    request = httpx.Request("POST", "http://test/upload", data={"purpose": "fine-tune"},
                            files={"file": ("t.jsonl", content, "application/jsonl")})
    raw = request.read()

    async def chunks() -> AsyncIterator[bytes]:  # as a server receives it: 64 KiB at a time
        for start in range(0, len(raw), 65_536):
            yield raw[start:start + 65_536]

    answer = await post(tmp_path, content=chunks(), headers={"content-type": request.headers["content-type"]})
    body = answer.json()
    expected = validate_training_file(content.splitlines())
    assert (body["fields"], body["filename"], body["content_type"]) == ({"purpose": "fine-tune"}, "t.jsonl", "application/jsonl")
    assert body["size"] == len(content) and body["spooled"] == content.decode()
    assert body["report"] == {"examples": expected.examples, "tokens": expected.billable_tokens, "errors": []}


async def test_line_errors_are_reported_and_a_purpose_after_the_file_is_kept(tmp_path: Path) -> None:
    content = b"".join(lines(3)) + b'{"messages": []}\n' + b"[1, 2]\n"
    files = {"file": ("t.jsonl", content)}
    # httpx sends form fields before files; build the body by hand to put the purpose last.
    request = httpx.Request("POST", "http://test/upload", files=files)
    boundary = request.headers["content-type"].split("boundary=")[1]
    body = request.read().replace(
        f"--{boundary}--".encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--{boundary}--'.encode(),
    )
    answer = await post(tmp_path, content=body, headers={"content-type": request.headers["content-type"]})
    got = answer.json()
    assert got["fields"] == {"purpose": "fine-tune"}
    assert got["report"]["examples"] == 3
    assert got["report"]["errors"] == [[4, "'messages' must be a non-empty list"], [5, "expected a JSON object, got list"]]


async def test_a_batch_file_is_not_validated(tmp_path: Path) -> None:
    answer = await post(tmp_path, data={"purpose": "batch"}, files={"file": ("b.jsonl", b"not json\n")})
    assert answer.json()["report"] is None and answer.json()["spooled"] == "not json\n"


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"purpose=fine-tune", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 400),
        ({"files": [("file", ("a.jsonl", b"{}")), ("other", ("b.jsonl", b"{}"))]}, 400),
        ({"files": {"file": ("a.jsonl", b"x" * (LIMIT + 1))}}, 413),
    ],
)
async def test_bad_uploads_are_refused_and_leave_nothing_on_disk(tmp_path: Path, kwargs: dict, status: int) -> None:
    answer = await post(tmp_path, **kwargs)
    assert answer.status_code == status
    assert list(tmp_path.iterdir()) == []
