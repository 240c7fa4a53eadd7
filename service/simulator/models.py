"""The models API: list, retrieve, and delete fine-tuned models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from service.simulator import wire
from service.simulator.catalog import ModelInfo
from service.simulator.errors import ApiError, model_not_found

if TYPE_CHECKING:
    from service.simulator.state import Simulator


def _model_json(info: ModelInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "model", "created": info.created, "owned_by": info.owned_by}


async def list_models(sim: Simulator, request: Request) -> Response:
    return wire.json_response(
        {"object": "list", "data": [_model_json(m) for m in sim.catalog.listed()]}
    )


async def retrieve(sim: Simulator, request: Request) -> Response:
    name = request.path_params["model"]
    info = sim.catalog.get(name)
    if info is None:
        raise model_not_found(name)
    return wire.json_response(_model_json(info))


async def delete(sim: Simulator, request: Request) -> Response:
    name = request.path_params["model"]
    if not name.startswith("ft:"):
        raise ApiError(
            403,
            "You have insufficient permissions for this operation.",
            type="invalid_request_error",
        )
    if not sim.catalog.delete_fine_tuned(name):
        raise model_not_found(name)
    return wire.json_response({"id": name, "object": "model", "deleted": True})
