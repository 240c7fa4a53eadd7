"""GET /v1/models: the upstream's list, without fine-tuned models that belong to other teams."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.errors import FareboxError, UpstreamError, UpstreamTimeout
from service.models_access import is_fine_tuned_name
from service.proxy.upstream import key_refused, response_headers
from service.runtime import Runtime


async def _get(rt: Runtime, request: Request, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        async with rt.upstream.session.get(
            rt.upstream.url(path, request.url.query), headers=rt.upstream.request_headers(request.headers)
        ) as resp:
            data = await resp.read()
    except asyncio.TimeoutError as exc:
        raise UpstreamTimeout("The upstream did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"The upstream could not be reached: {type(exc).__name__}.") from exc
    if resp.status == 401:
        raise key_refused()
    return resp.status, response_headers(resp.headers), data


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    status, headers, data = await _get(rt, request, "/models")
    if status == 200:
        body = orjson.loads(data)
        visible = []
        for item in body.get("data", []):
            model_id = item.get("id", "")
            if is_fine_tuned_name(model_id):
                try:
                    await rt.models.check_access(principal, model_id)
                except FareboxError:  # another team's, or its owner cannot be checked now: hidden
                    continue
            visible.append(item)
        body["data"] = visible
        data = orjson.dumps(body)
    return Response(data, status_code=status, headers=headers, media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    model = request.path_params["model"]
    await rt.models.check_access(principal, model)
    status, headers, data = await _get(rt, request, f"/models/{model}")
    return Response(data, status_code=status, headers=headers, media_type="application/json")
