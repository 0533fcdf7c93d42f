"""The one error model (SPEC §6): ``{code, message, retryable, details}``.

Every layer raises :class:`RunnerHostError`; HTTP maps ``code`` to a status,
the runner API serialises it unchanged. Messages must never carry secrets.
"""
from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorCode(str, Enum):
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    INVALID_ARGUMENT = "invalid_argument"
    RUNTIME_ERROR = "runtime_error"
    # Host-level codes (ingress only; never returned by the runner API).
    NO_BINDING = "no_binding"
    CONFLICT = "conflict"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.RUNTIME_ERROR: 500,
    ErrorCode.NO_BINDING: 404,
    ErrorCode.CONFLICT: 409,
}


class ErrorBody(BaseModel):
    """JSON shape of an error, identical on HTTP, the runner API and MCP."""

    model_config = ConfigDict(extra="ignore")

    code: str
    message: str
    retryable: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class RunnerHostError(Exception):
    """An error in the project's error model. Picklable, so it crosses Ray."""

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        retryable: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message
        self.retryable = retryable
        self.details = dict(details or {})
        super().__init__(f"{self.code.value}: {message}")

    def __reduce__(self):  # keep keyword-only args through pickling (Ray)
        return (_rebuild, (self.code.value, self.message, self.retryable, self.details))

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]

    def to_body(self) -> ErrorBody:
        return ErrorBody(code=self.code.value, message=self.message,
                         retryable=self.retryable, details=self.details)

    def to_dict(self) -> dict[str, Any]:
        return self.to_body().model_dump()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunnerHostError":
        body = ErrorBody.model_validate(data)
        try:
            code = ErrorCode(body.code)
        except ValueError:
            code = ErrorCode.RUNTIME_ERROR
        return cls(code, body.message, retryable=body.retryable, details=body.details)


def _rebuild(code: str, message: str, retryable: bool, details: dict[str, Any]) -> RunnerHostError:
    return RunnerHostError(code, message, retryable=retryable, details=details)


def unauthorized(message: str, **details: Any) -> RunnerHostError:
    return RunnerHostError(ErrorCode.UNAUTHORIZED, message, details=details)


def not_found(message: str, **details: Any) -> RunnerHostError:
    return RunnerHostError(ErrorCode.NOT_FOUND, message, details=details)


def invalid_argument(message: str, **details: Any) -> RunnerHostError:
    return RunnerHostError(ErrorCode.INVALID_ARGUMENT, message, details=details)


def payload_too_large(message: str, **details: Any) -> RunnerHostError:
    return RunnerHostError(ErrorCode.PAYLOAD_TOO_LARGE, message, details=details)
