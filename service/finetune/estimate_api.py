"""The estimate over HTTP: POST /v1/farebox/estimates and GET /v1/files/{file_id}/estimate."""

from __future__ import annotations

from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pricing import PricingError
from service.errors import InvalidRequest
from service.finetune.estimates import PromptSizes, as_json, estimate, parse_at, parse_epochs
from service.finetune.scoping import owned_file
from service.proxy.body import read_body
from service.runtime import Runtime

UPPER_BOUND = (
    "tokens were counted at upload, before the model was known: in every encoding and without "
    "truncating long examples, so this is an upper bound"
)


class EstimateIn(BaseModel):
    """Either one of the team's files, or a token count per epoch (with the example count for auto epochs)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=256)
    training_file: str | None = Field(default=None, max_length=128)
    tokens: int | None = Field(default=None, ge=0)
    examples: int | None = Field(default=None, ge=1)
    n_epochs: int | Literal["auto"] = "auto"
    at: str | None = Field(default=None, max_length=40)
    base_prompt_tokens: int = Field(default=2000, ge=0)
    fine_tuned_prompt_tokens: int = Field(default=200, ge=0)
    completion_tokens: int = Field(default=150, ge=0)
    requests: int = Field(default=1000, ge=1)


async def create_estimate(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    body = await read_body(request, 64 * 1024)
    try:
        spec = EstimateIn.model_validate(orjson.loads(body or b"null"))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise InvalidRequest(f"Invalid estimate request: {_first_problem(exc)}") from None
    if (spec.training_file is None) == (spec.tokens is None):
        raise InvalidRequest("Give either 'training_file' (one of your files) or 'tokens' (per epoch).")
    tokens, examples, warnings = spec.tokens, spec.examples, ()
    if spec.training_file is not None:
        row = await owned_file(rt, principal.team_id, spec.training_file, param="training_file")
        tokens, examples, warnings = row.billable_tokens, row.examples, (UPPER_BOUND,)
        if tokens is None:
            raise InvalidRequest(f"File {row.id} was not uploaded for fine-tuning.", param="training_file")
    return _answer(spec.model, tokens, examples, spec.n_epochs, spec.at, warnings, PromptSizes(
        spec.base_prompt_tokens, spec.fine_tuned_prompt_tokens, spec.completion_tokens, spec.requests,
    ))


async def file_estimate(request: Request) -> Response:
    rt: Runtime = request.app.state.runtime
    principal = await rt.authenticate(request)
    row = await owned_file(rt, principal.team_id, request.path_params["file_id"])
    query = request.query_params
    model = query.get("model")
    if not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if row.billable_tokens is None:
        raise InvalidRequest(f"File {row.id} was not uploaded for fine-tuning.", param="file_id")
    try:
        sizes = PromptSizes(**{
            name: int(query[name]) for name in
            ("base_prompt_tokens", "fine_tuned_prompt_tokens", "completion_tokens", "requests") if name in query
        })
    except (ValueError, PricingError) as exc:
        raise InvalidRequest(f"Invalid comparison sizes: {exc}") from None
    return _answer(model, row.billable_tokens, row.examples, query.get("n_epochs", "auto"), query.get("at"),
                   (UPPER_BOUND,), sizes)


def _answer(
    model: str, tokens: int | None, examples: int | None, n_epochs: object, at: str | None,
    warnings: tuple[str, ...], sizes: PromptSizes,
) -> Response:
    try:
        est = estimate(tokens or 0, examples, model, parse_epochs(n_epochs), parse_at(at), sizes, warnings)
    except PricingError as exc:
        raise InvalidRequest(f"Farebox cannot estimate this job: {exc}") from None
    return JSONResponse(as_json(est))


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg', 'invalid value')}" if where else str(first.get("msg"))
    return str(exc)
