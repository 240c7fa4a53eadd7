"""The Files API: uploads stored on disk, listed, retrieved, downloaded and deleted."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from service.simulator import wire
from service.simulator.errors import invalid, no_such
from service.simulator.multipart import receive_upload

if TYPE_CHECKING:
    from service.simulator.state import Simulator

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_API_NAMES = {"fine-tune": "Fine-Tuning", "batch": "Batch"}


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


class FileStore:
    """File records in memory, their contents under one directory (one file per id)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, StoredFile] = {}

    def staging_path(self) -> Path:
        return self.directory / f"upload-{wire.new_id('', 16)}.part"

    def add(self, staged: Path, filename: str, purpose: str, size: int) -> StoredFile:
        file_id = wire.new_id("file-", 22)
        path = self.directory / file_id
        staged.rename(path)
        record = StoredFile(file_id, filename, purpose, size, int(time.time()), path)
        self._files[file_id] = record
        return record

    def add_bytes(self, content: bytes, filename: str, purpose: str) -> StoredFile:
        staged = self.staging_path()
        staged.write_bytes(content)
        return self.add(staged, filename, purpose, len(content))

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        record = self._files.pop(file_id, None)
        if record is None:
            return False
        record.path.unlink(missing_ok=True)
        return True

    def listed(self, purpose: str | None = None) -> list[StoredFile]:
        """Oldest first."""
        return [f for f in self._files.values() if purpose is None or f.purpose == purpose]


def _get(sim: Simulator, request: Request) -> StoredFile:
    file_id = request.path_params["file_id"]
    record = sim.files.get(file_id)
    if record is None:
        raise no_such("File", file_id, param="file_id")
    return record


async def upload(sim: Simulator, request: Request) -> Response:
    staged = sim.files.staging_path()
    form = await receive_upload(request, staged)
    try:
        purpose = form.fields.get("purpose")
        if not purpose:
            raise invalid("'purpose' is a required property", param="purpose")
        if purpose not in PURPOSES:
            raise invalid(
                f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose"
            )
        if form.path is None or form.file_field != "file":
            raise invalid("'file' is a required property", param="file")
        filename = form.filename or "upload"
        if purpose in ("fine-tune", "batch") and not filename.endswith(".jsonl"):
            raise invalid(
                f"Invalid file format for {_API_NAMES[purpose]} API. Must be .jsonl",
                param="file",
            )
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    record = sim.files.add(staged, filename, purpose, form.size)
    return wire.json_response(record.to_json())


async def list_files(sim: Simulator, request: Request) -> Response:
    query = request.query_params
    files = sim.files.listed(query.get("purpose"))
    if query.get("order", "desc") == "desc":
        files.reverse()
    after = query.get("after")
    if after:
        ids = [f.id for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = min(max(int(query.get("limit", 10000)), 1), 10000)
    except ValueError:
        raise invalid("'limit' must be an integer", param="limit") from None
    page = files[:limit]
    return wire.json_response(
        {
            "object": "list",
            "data": [f.to_json() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(files) > limit,
        }
    )


async def retrieve(sim: Simulator, request: Request) -> Response:
    return wire.json_response(_get(sim, request).to_json())


async def delete(sim: Simulator, request: Request) -> Response:
    record = _get(sim, request)
    sim.files.delete(record.id)
    return wire.json_response({"id": record.id, "object": "file", "deleted": True})


async def content(sim: Simulator, request: Request) -> Response:
    record = _get(sim, request)
    return FileResponse(record.path, media_type="application/octet-stream")
