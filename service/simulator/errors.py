"""OpenAI-shaped errors the simulator answers with: status, body and the headers the API sends."""

from __future__ import annotations

import orjson


class ApiError(Exception):
    """An error response: {"error": {message, type, param, code}} with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def no_such(kind: str, ident: str, param: str = "id") -> ApiError:
    return ApiError(404, f"No such {kind}: {ident}", param=param)


def missing_key() -> ApiError:
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header "
        "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


def wrong_key(key: str) -> ApiError:
    shown = f"{key[:3]}*****{key[-4:]}" if len(key) > 8 else "*****"
    return ApiError(
        401,
        f"Incorrect API key provided: {shown}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        code="invalid_api_key",
    )


def injected(kind: str, organization: str, retry_after_s: int) -> ApiError:
    """The error a fault names: an HTTP status, or "quota" for the out-of-credit 429."""
    if kind == "quota":
        return ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details. For more "
            "information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    try:
        status = int(kind)
    except ValueError:
        raise invalid(f"x-sim-error: unknown fault {kind!r}", param="x-sim-error") from None
    if status == 429:
        return ApiError(
            429,
            f"Rate limit reached for requests in organization {organization} on requests per min "
            "(RPM): "
            f"Limit 30000, Used 30000, Requested 1. Please try again in {retry_after_s}s. Visit "
            "https://platform.openai.com/account/rate-limits to learn more.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(retry_after_s)},
        )
    if status == 503:
        return ApiError(
            503, "The engine is currently overloaded, please try again later.", type="server_error"
        )
    if status >= 500:
        return ApiError(
            status,
            "The server had an error while processing your request. Sorry about that!",
            type="server_error",
        )
    if status == 401:
        return wrong_key("sk-simulated-fault")
    if status == 404:
        return ApiError(404, "Simulated not found.")
    if 400 <= status < 500:
        return ApiError(status, f"Simulated client error {status}.")
    raise invalid(f"x-sim-error: {status} is not an error status", param="x-sim-error")
