"""The inference request path, top to bottom: auth, estimate, reserve, forward, meter, settle."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import orjson
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service import metrics
from service.errors import FareboxError, InvalidRequest, UpstreamError, UpstreamTimeout
from service.ledger.event import ChargeEvent
from service.proxy import metering
from service.proxy.body import read_body
from service.proxy.calls import InferenceCall, parse_call
from service.proxy.relay_response import RelayResponse
from service.proxy.stream_relay import StreamOutcome, never_relayed, relay_stream
from service.proxy.upstream import key_refused, response_headers
from service.proxy.upstream_pool import UpstreamAnswer, UpstreamConnectError, UpstreamProtocolError
from service.runtime import Runtime

log = structlog.get_logger(__name__)

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


async def handle_inference(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    request_id = request.state.request_id
    path = request.scope["path"]  # not request.url: building that URL costs more than routing
    endpoint = ENDPOINTS[path]

    principal = await rt.authenticate(request)
    try:
        body = await read_body(request, rt.settings.max_body_bytes)
    except ClientDisconnect:
        # The client left mid-body (a load tool stopping, a killed SDK): nothing was reserved
        # or sent, and nobody is there to read an answer, so no error, log line or refusal.
        return Response(status_code=499)
    call = parse_call(endpoint, _loads(body))
    await rt.models.check_access(principal, call.model)

    priced = metering.price_context(call.model, started)
    prompt_tokens = metering.estimate_prompt_tokens(call, priced)
    hold = await rt.budgets.reserve(
        principal,
        request_id=request_id,
        model=call.model,
        base_model=priced.base_model,
        kind="inference",
        amount_nano=metering.max_cost(call, priced, prompt_tokens),
        ttl_s=rt.settings.reservation_ttl_s,
    )

    outgoing = body
    if call.stream and not call.client_wants_usage:
        outgoing = _with_usage(call)
    meter = _Meter(rt, request, call, priced, principal, hold, started, prompt_tokens)
    meter.forwarding(t0)
    try:
        upstream = await rt.upstream.post_json(
            path[3:], request.scope["query_string"].decode("latin-1"), outgoing, request.scope["headers"]
        )
    except asyncio.TimeoutError as exc:
        await meter.settle_failure("upstream_timeout", 504)
        raise UpstreamTimeout("The upstream did not answer in time.") from exc
    except UpstreamConnectError as exc:
        log.warning("upstream_unreachable", request_id=request_id, error=str(exc))
        await meter.settle_failure("upstream_error", 502)
        raise UpstreamError(f"The upstream could not be reached ({type(exc.__cause__ or exc).__name__}).") from exc
    except ConnectionError as exc:  # UpstreamClosed, UpstreamProtocolError
        log.warning("upstream_no_answer", request_id=request_id, error=str(exc))
        await meter.settle_failure("upstream_error", 502)
        if isinstance(exc, UpstreamProtocolError):
            raise UpstreamError("The upstream answered with bytes that are not HTTP.") from exc
        raise UpstreamError("The upstream closed the connection without answering.") from exc
    meter.upstream_answered(upstream)

    headers = response_headers(upstream.headers)
    headers["x-farebox-request-id"] = request_id
    content_type = upstream.headers.get("content-type", "")
    if call.stream and upstream.status == 200 and content_type.startswith("text/event-stream"):
        return RelayResponse(
            relay_stream(
                upstream,
                strip_usage_chunk=not call.client_wants_usage,
                finish=meter.settle_stream,
                spawn=rt.spawn,
            ),
            status_code=200,
            headers=headers,
            on_unstarted=lambda: never_relayed(
                upstream, strip_usage_chunk=not call.client_wants_usage, finish=meter.settle_stream, spawn=rt.spawn
            ),
        )
    try:
        data = await upstream.read()
    except (ConnectionError, asyncio.TimeoutError) as exc:
        await meter.settle_failure("upstream_error", 502)
        raise UpstreamError("The upstream closed the connection before its answer was complete.") from exc
    finally:
        upstream.release()
    meter.upstream_done()
    if upstream.status >= 400:
        await meter.settle_upstream_error(upstream.status)
        if upstream.status == 401:
            raise key_refused()
        return Response(data, status_code=upstream.status, headers=headers)
    try:
        metered, model = metering.meter_body(call, priced, data, prompt_tokens)
    except metering.GarbageAnswer as exc:
        await meter.settle_garbage()
        raise UpstreamError("The upstream answered with a body that is not an OpenAI response.") from exc
    # The answer no longer depends on the settle, so it leaves while Redis runs it: one turn of
    # the loop lets the settle write its command first, and the hold covers the budget until
    # the settle lands. The request ends only once it has (SettlingResponse).
    meter.answer_ready()
    settling = rt.spawn(meter.settle_answer(metered, upstream.status, model))
    await asyncio.sleep(0)
    return SettlingResponse(data, status_code=upstream.status, headers=headers, settling=settling)


def _loads(body: bytes) -> object:
    if not body:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg} (at byte {exc.pos}).") from exc


def _with_usage(call: InferenceCall) -> bytes:
    """Ask the upstream for the usage chunk so streams are metered from its own count."""
    payload = dict(call.payload)
    options = dict(payload.get("stream_options") or {})
    options["include_usage"] = True
    payload["stream_options"] = options
    return orjson.dumps(payload)


class _Meter:
    """Turns what the upstream answered into one charge, settled exactly once."""

    __slots__ = (
        "rt", "call", "priced", "principal", "hold", "started", "prompt_estimate",
        "request_id", "upstream_request_id", "pre_s", "upstream_s", "t_forward", "t_back", "path", "added_s",
    )

    def __init__(self, rt, request, call, priced, principal, hold, started, prompt_estimate) -> None:  # type: ignore[no-untyped-def]
        self.rt = rt
        self.call = call
        self.priced = priced
        self.principal = principal
        self.hold = hold
        self.started = started
        self.prompt_estimate = prompt_estimate
        self.request_id = request.state.request_id
        self.path = call.endpoint
        self.upstream_request_id: str | None = None
        self.pre_s = 0.0
        self.upstream_s = 0.0
        self.t_forward = 0.0
        self.t_back: float | None = None  # None for streams: their relay time is not overhead
        self.added_s: float | None = None  # set when the answer leaves before its settle

    def forwarding(self, t0: float) -> None:
        self.t_forward = time.perf_counter()
        self.pre_s = self.t_forward - t0

    def upstream_answered(self, upstream: UpstreamAnswer) -> None:
        self.upstream_request_id = upstream.headers.get("x-request-id")
        self.upstream_s = time.perf_counter() - self.t_forward

    def upstream_done(self) -> None:
        self.t_back = time.perf_counter()
        self.upstream_s = self.t_back - self.t_forward

    async def settle_failure(self, status: str, http_status: int) -> None:
        await self._settle(metering.Metered.nothing(), status=status, http_status=http_status, model=None)

    def answer_ready(self) -> None:
        """The answer is complete; the settle that follows is not in the client's way."""
        self.added_s = self.pre_s + time.perf_counter() - (self.t_back or self.t_forward)

    async def settle_answer(self, metered: metering.Metered, http_status: int, model: str | None) -> None:
        await self._settle(metered, status="ok", http_status=http_status, model=model)

    async def settle_upstream_error(self, http_status: int) -> None:
        metrics.record_upstream_error(self.path, http_status)
        await self._settle(metering.Metered.nothing(), status="upstream_error", http_status=http_status, model=None)

    async def settle_garbage(self) -> None:
        await self._settle(metering.Metered.nothing(), status="upstream_garbage", http_status=502, model=None)

    async def settle_stream(self, outcome: StreamOutcome) -> None:
        metered = metering.meter_stream(self.call, self.priced, outcome, self.prompt_estimate)
        await self._settle(metered, status=outcome.status, http_status=200, model=outcome.model)

    async def _settle(self, metered: metering.Metered, *, status: str, http_status: int, model: str | None) -> None:
        rates = self.priced.rates
        event = ChargeEvent(
            request_id=self.request_id,
            team_id=self.principal.team_id,
            key_id=self.principal.key_id,
            kind="inference",
            status=status,
            endpoint=self.path,
            started_at=self.started,
            finished_at=datetime.now(timezone.utc),
            upstream_request_id=self.upstream_request_id,
            model_requested=self.call.model,
            model_answered=model,
            base_model=self.priced.base_model,
            fine_tuned=self.priced.fine_tuned,
            priced=self.priced.priced and metered.priced,
            prompt_tokens=metered.prompt_tokens,
            cached_tokens=metered.cached_tokens,
            completion_tokens=metered.completion_tokens,
            total_tokens=metered.prompt_tokens + metered.completion_tokens,
            cost_nano=metered.cost_nano,
            input_rate_nano=rates.input if rates else None,
            cached_rate_nano=rates.cached_input if rates else None,
            output_rate_nano=rates.output if rates else None,
            catalog_version=self.priced.catalog_version,
            usage_source=metered.source,
            http_status=http_status,
        )
        try:
            await self.rt.settle(self.principal, self.hold, event)
        except FareboxError:
            raise
        except Exception:  # never lose the charge, whatever broke: the ledger writer retries it
            log.exception("settle_failed", request_id=self.request_id)
            self.rt.charge_directly(event)
        added = self.added_s
        if added is None:
            added = self.pre_s
            if self.t_back is not None:
                added += time.perf_counter() - self.t_back
        self.rt.observe(self.principal, event, upstream_s=self.upstream_s, added_s=added)


class SettlingResponse(Response):
    """A complete answer whose settle is already under way: sent first, then the settle awaited."""

    def __init__(self, content: bytes, *, status_code: int, headers: dict[str, str], settling: asyncio.Task[None]) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.settling = settling

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self.settling)  # cancelling the request must not cancel its charge
