"""Every HTTP error in the one error model ``{code, message, retryable, details}``.

* :class:`~protocol.errors.RunnerHostError` → its own status (``http_status``).
* Request validation (malformed JSON, unknown fields, bad query values) →
  **400 ``invalid_argument``** — always 400, never FastAPI's default 422, with
  ``details.errors`` listing ``loc``/``msg``/``type`` (the raw ``input`` is not echoed).
* Starlette HTTP errors (unknown route 404, wrong method 405, …) → same status,
  mapped code.
* Ray actor/availability failures → 503 ``runtime_error`` (retryable).
* Anything else → 500 ``runtime_error`` "internal error": no stack, no secrets.

:class:`BodyLimitMiddleware` answers 413 ``payload_too_large`` before a body
larger than the cap is read into memory.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

log = get_logger(__name__)

_STATUS_CODES = {
    400: ErrorCode.INVALID_ARGUMENT, 401: ErrorCode.UNAUTHORIZED, 403: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND, 409: ErrorCode.CONFLICT, 413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED, 504: ErrorCode.DEADLINE_EXCEEDED,
}


def error_body(code: ErrorCode | str, message: str, *, retryable: bool = False,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": ErrorCode(code).value, "message": message, "retryable": retryable,
            "details": details or {}}


#: Seconds a client told 429 / 503 should wait before retrying (``Retry-After``).
RETRY_AFTER_S = 1


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    if status in (429, 503):
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: RunnerHostError) -> int:
    status = exc.http_status
    if status == 500 and exc.retryable:
        return 503
    return status


async def _runnerhost_error(_: Request, exc: RunnerHostError) -> JSONResponse:
    return error_response(status_of(exc), exc.to_dict())


def _clean_errors(errors: Any) -> list[dict[str, Any]]:
    out = []
    for err in list(errors)[:20]:
        out.append({"loc": [str(p) for p in err.get("loc", ())],
                    "msg": str(err.get("msg", ""))[:300],
                    "type": str(err.get("type", ""))})
    return out


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _clean_errors(exc.errors())
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(p for p in first["loc"] if p not in ("body",)) or "request"
    message = f"invalid request: {where}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_response(400, error_body(ErrorCode.INVALID_ARGUMENT, message, details={"errors": errors}))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    code = _STATUS_CODES.get(status, ErrorCode.RUNTIME_ERROR if status >= 500 else ErrorCode.INVALID_ARGUMENT)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(status, error_body(code, message, retryable=status in (429, 503)),
                          headers=getattr(exc, "headers", None))


def _is_unavailable(exc: BaseException) -> bool:
    try:
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (RayActorError, ActorUnavailableError, GetTimeoutError))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    if _is_unavailable(exc):
        log.warning("%s %s: host actor unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return error_response(503, error_body(ErrorCode.RUNTIME_ERROR, "the host is temporarily unavailable",
                                              retryable=True))
    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return error_response(500, error_body(ErrorCode.RUNTIME_ERROR, "internal error", retryable=True))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RunnerHostError, _runnerhost_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)


class BodyLimitMiddleware:
    """Cap request bodies at ``max_bytes`` (413 in the error model) without reading past the cap."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await self._reject(send, 400, error_body(ErrorCode.INVALID_ARGUMENT, "bad Content-Length"))
                    return
        if length is not None and length > self.max_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await self._reject(send, 413, error_body(
            ErrorCode.PAYLOAD_TOO_LARGE, f"request body exceeds {self.max_bytes} bytes",
            details={"max_bytes": self.max_bytes}))

    @staticmethod
    async def _reject(send: Send, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
