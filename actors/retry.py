"""Calling actors that may restart: retry on actor death with bounded backoff."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ray.exceptions import ActorUnavailableError, RayActorError

from protocol.errors import ErrorCode, RunnerHostError

from . import constants, metrics

RETRYABLE = (RayActorError, ActorUnavailableError)


async def call_with_retry(make_call: Callable[[], Awaitable[Any]], *, attempts: int | None = None,
                          first_delay: float | None = None, max_delay: float | None = None,
                          what: str = "actor call") -> Any:
    """Run ``make_call()`` until it succeeds; safe only for idempotent calls."""
    attempts = attempts or constants.CALL_RETRY_ATTEMPTS
    delay = constants.CALL_RETRY_FIRST_DELAY_S if first_delay is None else first_delay
    max_delay = constants.CALL_RETRY_MAX_DELAY_S if max_delay is None else max_delay
    for attempt in range(attempts):
        try:
            return await make_call()
        except RETRYABLE as exc:
            metrics.actor_call_retried(what, exc)
            if attempt == attempts - 1:
                raise RunnerHostError(ErrorCode.RUNTIME_ERROR, f"{what} failed: actor unavailable",
                                      retryable=True) from None
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)


def unwrap(envelope: dict[str, Any]) -> Any:
    """Turn an ``{"ok": …}`` / ``{"error": …}`` reply into a value or a RunnerHostError."""
    if "error" in envelope:
        raise RunnerHostError.from_dict(envelope["error"])
    return envelope.get("ok")


async def reply(coro: Awaitable[Any]) -> dict[str, Any]:
    """Run ``coro`` and wrap its outcome for the wire (errors as values, not exceptions)."""
    try:
        return {"ok": await coro}
    except RunnerHostError as exc:
        return {"error": exc.to_dict()}

