"""The Files API through Farebox: uploads validated and counted before OpenAI sees them, scoped per team.

Listing answers from Farebox's own table rather than the upstream's list: the upstream lists
every file of the organisation (all teams), so filtering it would mean walking the whole
list for every page, and `after`/`limit` pagination must run over the team's files only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import aiohttp
import structlog
from sqlalchemy import and_, or_, select, update
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pricing import TrainingFileReport
from service.db.models import TrainingFile, utcnow
from service.errors import InvalidRequest, UpstreamError
from service.finetune import forward
from service.finetune.scoping import owned_file
from service.finetune.spool import SpooledUpload, receive_upload, spool_dir
from service.ledger.entries import as_utc
from service.runtime import Runtime

log = structlog.get_logger(__name__)

SHOWN_ERRORS = 20  # line errors named in the refusal's message (the body lists up to 100)
MAX_LIST = 10_000


class InvalidTrainingFile(InvalidRequest):
    """A training file refused before upload; the body also lists the first line errors."""

    code = "invalid_training_file"

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message, param="file")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["error"]["errors"] = self.errors
        return body


def refusal(filename: str, report: TrainingFileReport) -> InvalidTrainingFile:
    """The 400 for a file that fails validation, naming the first lines and their problems."""
    shown = "; ".join(str(e) for e in report.errors[:SHOWN_ERRORS])
    if report.error_count == 0:
        problem = "it has no valid training examples"
    else:
        more = report.error_count - min(report.error_count, SHOWN_ERRORS)
        problem = f"{report.error_count} invalid line(s): {shown}" + (f"; and {more} more" if more else "")
    message = (
        f"Farebox refused the training file {filename!r} before sending it to OpenAI: {problem}. "
        "Fix the file, or ask an admin to turn off training-file validation for your team."
    )
    return InvalidTrainingFile(message, [{"line": e.line, "reason": e.reason} for e in report.errors])


def file_object(row: TrainingFile) -> dict[str, Any]:
    """The row as OpenAI's file object."""
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": int(as_utc(row.created_at).timestamp()),
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": None,
    }


async def upload_file(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    upload = await receive_upload(
        request, spool_dir(rt.settings.spool_dir), limit=rt.settings.max_upload_bytes,
    )
    try:
        purpose = upload.fields.get("purpose")
        if not purpose:
            raise InvalidRequest("'purpose' is a required property", param="purpose")
        if upload.path is None:
            raise InvalidRequest("'file' is a required property", param="file")
        report = upload.report if purpose == "fine-tune" else None
        if report is not None and not report.ok and principal.validate_training_files:
            raise refusal(upload.filename or "upload", report)
        answer = await _send(rt, request, upload)
    finally:
        upload.discard()
    if answer.status == 200:
        data = answer.json()
        try:
            await _record(rt, principal.team_id, data, report)
        except Exception:
            # A file nobody owns could never be seen or deleted again: take it back upstream.
            log.exception("training_file_record_failed")
            if isinstance(data, dict) and isinstance(data.get("id"), str):
                try:
                    await forward.call(rt, "DELETE", f"/files/{data['id']}")
                except Exception as exc:
                    log.error("orphan_file_delete_failed", file_id=data["id"], error=str(exc))
            raise
    return answer.response(request.state.request_id)


async def _send(rt: Runtime, request: Request, upload: SpooledUpload) -> forward.Answer:
    """Stream the spooled file to the upstream as multipart; aiohttp reads it from disk in chunks."""
    assert upload.path is not None
    form = aiohttp.FormData()
    for name, value in upload.fields.items():
        form.add_field(name, value)
    with upload.path.open("rb") as handle:
        form.add_field(
            upload.file_field or "file", handle, filename=upload.filename or "upload",
            content_type=upload.content_type or "application/octet-stream",
        )
        return await forward.call(rt, "POST", "/files", client_headers=dict(request.headers), body=form)


async def _record(rt: Runtime, team_id: str, data: Any, report: TrainingFileReport | None) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise UpstreamError("The upstream answered the upload without a file id.")
    created = data.get("created_at")
    row = TrainingFile(
        id=data["id"],
        team_id=team_id,
        filename=str(data.get("filename") or "")[:512],
        purpose=str(data.get("purpose") or "")[:64],
        bytes=int(data.get("bytes") or 0),
        examples=report.examples if report is not None else None,
        # Counted in every encoding, uncapped: an upper bound for whichever model the job names.
        billable_tokens=report.billable_tokens if report is not None else None,
        validated=report is not None and report.ok,
        created_at=datetime.fromtimestamp(created, timezone.utc) if isinstance(created, int) else utcnow(),
    )
    async with rt.sessions() as session:
        session.add(row)
        await session.commit()
    log.info("training_file_recorded", file_id=row.id, team_id=team_id, examples=row.examples,
             billable_tokens=row.billable_tokens, validated=row.validated)


async def list_files(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    query = request.query_params
    try:
        limit = min(max(int(query.get("limit", MAX_LIST)), 1), MAX_LIST)
    except ValueError:
        raise InvalidRequest("'limit' must be an integer", param="limit") from None
    descending = query.get("order", "desc") != "asc"
    F = TrainingFile
    stmt = select(F).where(F.team_id == principal.team_id, F.deleted_at.is_(None))  # type: ignore[union-attr]
    if query.get("purpose"):
        stmt = stmt.where(F.purpose == query["purpose"])
    async with rt.sessions() as session:
        after = query.get("after")
        if after:
            anchor = await session.get(F, after)
            if anchor is None or anchor.team_id != principal.team_id:
                return JSONResponse(_page([], False))
            created = as_utc(anchor.created_at)
            if descending:
                stmt = stmt.where(or_(F.created_at < created, and_(F.created_at == created, F.id < anchor.id)))
            else:
                stmt = stmt.where(or_(F.created_at > created, and_(F.created_at == created, F.id > anchor.id)))
        order = (F.created_at.desc(), F.id.desc()) if descending else (F.created_at.asc(), F.id.asc())  # type: ignore[attr-defined]
        rows = list((await session.execute(stmt.order_by(*order).limit(limit + 1))).scalars())
    return JSONResponse(_page([file_object(r) for r in rows[:limit]], len(rows) > limit))


def _page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


async def retrieve_file(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    row = await owned_file(rt, principal.team_id, request.path_params["file_id"])
    answer = await forward.relay(request, rt, "GET", f"/files/{row.id}")
    return answer.response(request.state.request_id)


async def delete_file(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    row = await owned_file(rt, principal.team_id, request.path_params["file_id"])
    answer = await forward.relay(request, rt, "DELETE", f"/files/{row.id}")
    if answer.status in (200, 404):  # deleted now, or already gone upstream
        async with rt.sessions() as session:
            await session.execute(update(TrainingFile).where(TrainingFile.id == row.id).values(deleted_at=utcnow()))
            await session.commit()
    return answer.response(request.state.request_id)


async def file_content(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    row = await owned_file(rt, principal.team_id, request.path_params["file_id"])
    return await forward.relay_stream(request, rt, f"/files/{row.id}/content")
