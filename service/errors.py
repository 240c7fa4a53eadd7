"""The one exception hierarchy; each error knows its HTTP status and OpenAI error type/code."""

from __future__ import annotations

from typing import Any

import orjson


class FareboxError(Exception):
    """Base of every error Farebox answers with; rendered as an OpenAI-shaped body."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(FareboxError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(FareboxError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class AuthenticationFailed(FareboxError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class TooManyAuthFailures(FareboxError):
    status = 429
    type = "requests"
    code = "too_many_failed_authentications"


class PermissionDenied(FareboxError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(FareboxError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(FareboxError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class BudgetExceeded(FareboxError):
    """A reservation did not fit a budget; answered like OpenAI's quota error."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class BudgetStoreUnavailable(FareboxError):
    status = 503
    type = "server_error"
    code = "budget_store_unavailable"


class DatabaseUnavailable(FareboxError):
    status = 503
    type = "server_error"
    code = "database_unavailable"


class UpstreamError(FareboxError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTimeout(FareboxError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


class ShuttingDown(FareboxError):
    status = 503
    type = "server_error"
    code = "shutting_down"
