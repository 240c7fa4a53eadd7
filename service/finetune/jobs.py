"""The fine-tuning jobs API through Farebox: create reserves the estimated training cost, the rest is scoped.

Create reads top to bottom like the inference path: auth, the team's file, estimate, reserve,
forward, record. The charge itself comes when the job ends (service.finetune.watcher).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import structlog
from sqlalchemy import and_, or_, select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pricing import PricingError, estimate_training
from service.auth.principal import Principal
from service.budgets.gate import Hold
from service.db.models import FineTuneJob
from service.errors import FareboxError, InvalidRequest, UpstreamError, UpstreamTimeout
from service.finetune import forward
from service.finetune.estimates import parse_epochs
from service.finetune.scoping import owned_file, owned_job
from service.finetune.settlement import ENDPOINT, HOLD_TTL_S, TERMINAL
from service.ledger.entries import as_utc
from service.ledger.event import ChargeEvent
from service.proxy.body import read_body
from service.runtime import Runtime

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_RECORD_RETRY_S = (0.5, 2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)


async def create_job(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    started = datetime.now(timezone.utc)
    request_id = request.state.request_id

    principal = await rt.authenticate(request)
    body = await read_body(request, rt.settings.max_body_bytes)
    payload = _payload(body)
    model = payload["model"]
    await rt.models.check_access(principal, model)  # continuing another team's fine-tune: 404
    training = await owned_file(rt, principal.team_id, payload["training_file"], param="training_file")
    if isinstance(payload.get("validation_file"), str):
        await owned_file(rt, principal.team_id, payload["validation_file"], param="validation_file")
    if training.purpose != "fine-tune" or training.billable_tokens is None:
        raise InvalidRequest(
            f"File {training.id} has purpose '{training.purpose}'; fine-tuning needs a file uploaded "
            "with purpose 'fine-tune'.", param="training_file", code="invalid_training_file",
        )
    if not training.examples:
        raise InvalidRequest(
            f"Farebox counted no valid training examples in {training.id}, so it cannot budget a job on it.",
            param="training_file", code="invalid_training_file",
        )
    try:
        estimate = estimate_training(
            training.billable_tokens, training.examples, model, parse_epochs(requested_epochs(payload)), started,
        )
    except PricingError as exc:
        raise InvalidRequest(
            f"Farebox cannot price fine-tuning {model!r}, so it cannot budget the job: {exc}", param="model",
            code="model_not_priced",
        ) from None
    hold = await rt.budgets.reserve(
        principal,
        request_id=request_id,
        model=model,
        base_model=estimate.base_model,
        kind="training",
        amount_nano=estimate.cost_nano,
        ttl_s=HOLD_TTL_S,
        at=started,
    )

    try:
        answer = await forward.call(
            rt, "POST", "/fine_tuning/jobs", client_headers=dict(request.headers), body=body,
            content_type="application/json",
        )
        data = answer.json() if answer.status == 200 else None
        if data is not None and not (isinstance(data, dict) and isinstance(data.get("id"), str)):
            raise UpstreamError("The upstream answered the job without a job id.")
    except FareboxError as exc:
        status = "upstream_timeout" if isinstance(exc, UpstreamTimeout) else "upstream_error"
        await _release(rt, principal, hold, model, estimate.base_model, started, status, exc.status)
        raise
    if data is None:  # refused upstream: nothing will be trained
        await _release(rt, principal, hold, model, estimate.base_model, started, "upstream_error", answer.status)
        return answer.response(request_id)

    job = dict(
        id=data["id"],
        team_id=principal.team_id,
        key_id=principal.key_id,
        request_id=request_id,
        model=model,
        base_model=estimate.base_model,
        training_file=training.id,
        validation_file=payload["validation_file"] if isinstance(payload.get("validation_file"), str) else None,
        n_epochs=estimate.epochs,
        estimated_tokens=estimate.trained_tokens,
        estimate_nano=estimate.cost_nano,
        training_rate_nano=estimate.training_rate_nano,
        catalog_version=estimate.catalog_version,
        status=str(data.get("status") or "validating_files")[:32],
        created_at=started,
        next_poll_at=started + timedelta(seconds=rt.settings.job_poll_interval_s),
    )
    if not await _record(rt, job):
        rt.spawn(_record_later(rt, job))
    log.info("job_created", job_id=data["id"], team_id=principal.team_id, estimate_nano=estimate.cost_nano,
             trained_tokens=estimate.trained_tokens, epochs=estimate.epochs)
    return answer.response(request_id)


def _payload(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} (at byte {exc.pos}).") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in ("model", "training_file"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    return payload


def requested_epochs(payload: dict[str, Any]) -> Any:
    """n_epochs as asked: method.<type>.hyperparameters wins over the legacy top-level hyperparameters."""
    method = payload.get("method")
    if isinstance(method, dict) and isinstance(method.get("type"), str):
        section = method.get(method["type"])
        params = section.get("hyperparameters") if isinstance(section, dict) else None
        if isinstance(params, dict) and "n_epochs" in params:
            return params["n_epochs"]
    params = payload.get("hyperparameters")
    return params.get("n_epochs") if isinstance(params, dict) else None


async def _release(
    rt: Runtime, principal: Principal, hold: Hold, model: str, base_model: str, started: datetime,
    status: str, http_status: int,
) -> None:
    """Settle a job the upstream never started at zero, giving its hold back."""
    event = ChargeEvent(
        request_id=hold.reservation.request_id, team_id=principal.team_id, key_id=principal.key_id,
        kind="training", status=status, endpoint=ENDPOINT, started_at=started,
        finished_at=datetime.now(timezone.utc), model_requested=model, base_model=base_model,
        usage_source="none", http_status=http_status,
    )
    try:
        await rt.settle(principal, hold, event)
    except Exception:  # never lose the row; the hold expires by itself
        log.exception("job_release_failed", request_id=event.request_id)
        rt.charge_directly(event)


async def _record(rt: Runtime, job: dict[str, Any]) -> bool:
    try:
        async with rt.sessions() as session:
            session.add(FineTuneJob(**job))
            await session.commit()
        return True
    except Exception as exc:
        log.error("job_record_failed", job_id=job["id"], error=str(exc))
        return False


async def _record_later(rt: Runtime, job: dict[str, Any]) -> None:
    """The job runs upstream and holds budget: keep trying to record it so it is watched and billed."""
    for delay in _RECORD_RETRY_S:
        await asyncio.sleep(delay)
        if await _record(rt, job):
            return
    log.critical("job_unrecorded", job_id=job["id"], team_id=job["team_id"], request_id=job["request_id"])


async def list_jobs(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    query = request.query_params
    if any(name.startswith("metadata") for name in query):
        raise InvalidRequest("Farebox does not filter fine-tuning jobs by metadata.", param="metadata")
    try:
        limit = min(max(int(query.get("limit", DEFAULT_LIMIT)), 1), MAX_LIMIT)
    except ValueError:
        raise InvalidRequest("'limit' must be an integer", param="limit") from None
    J = FineTuneJob
    stmt = select(J).where(J.team_id == principal.team_id)
    async with rt.sessions() as session:
        after = query.get("after")
        if after:
            anchor = await session.get(J, after)
            if anchor is None or anchor.team_id != principal.team_id:
                return JSONResponse({"object": "list", "data": [], "has_more": False})
            created = as_utc(anchor.created_at)
            stmt = stmt.where(or_(J.created_at < created, and_(J.created_at == created, J.id < anchor.id)))
        order = (J.created_at.desc(), J.id.desc())  # type: ignore[attr-defined]
        rows = list((await session.execute(stmt.order_by(*order).limit(limit + 1))).scalars())
    page = rows[:limit]
    data = await asyncio.gather(*(_current(rt, job) for job in page))
    return JSONResponse({"object": "list", "data": data, "has_more": len(rows) > limit})


async def _current(rt: Runtime, job: FineTuneJob) -> dict[str, Any]:
    """The job as the upstream reports it now; Farebox's record if the upstream no longer knows it."""
    answer = await forward.call(rt, "GET", f"/fine_tuning/jobs/{job.id}")
    if answer.status == 200:
        data = answer.json()
        if isinstance(data, dict):
            return data
    return {
        "object": "fine_tuning.job", "id": job.id, "model": job.model,
        "created_at": int(as_utc(job.created_at).timestamp()),
        "finished_at": int(as_utc(job.finished_at).timestamp()) if job.finished_at else None,
        "fine_tuned_model": job.fine_tuned_model, "status": job.status, "training_file": job.training_file,
        "validation_file": job.validation_file, "trained_tokens": job.trained_tokens,
        "hyperparameters": {"n_epochs": job.n_epochs}, "result_files": [], "error": None,
    }


async def retrieve_job(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "GET", f"/fine_tuning/jobs/{job.id}")
    if answer.status == 200 and job.settled_at is None and _status(answer) in TERMINAL:
        await request.app.state.job_watcher.poke(job.id)  # settle now rather than at the next poll
    return answer.response(request.state.request_id)


async def cancel_job(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "POST", f"/fine_tuning/jobs/{job.id}/cancel")
    if answer.status == 200 and job.settled_at is None:
        await request.app.state.job_watcher.poke(job.id)
    return answer.response(request.state.request_id)


async def pause_job(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "POST", f"/fine_tuning/jobs/{job.id}/pause")
    return answer.response(request.state.request_id)


async def resume_job(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "POST", f"/fine_tuning/jobs/{job.id}/resume")
    return answer.response(request.state.request_id)


async def list_events(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "GET", f"/fine_tuning/jobs/{job.id}/events")
    return answer.response(request.state.request_id)


async def list_checkpoints(request: Request) -> Response:
    rt, job = await _owned(request)
    answer = await forward.relay(request, rt, "GET", f"/fine_tuning/jobs/{job.id}/checkpoints")
    return answer.response(request.state.request_id)


async def _owned(request: Request) -> tuple[Runtime, FineTuneJob]:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    return rt, await owned_job(rt, principal.team_id, request.path_params["job_id"])


def _status(answer: forward.Answer) -> str | None:
    try:
        data = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return None
    return data.get("status") if isinstance(data, dict) else None
