"""When a database error is worth retrying, and the retry loop the storage actor runs.

A *transient* error is one of a server that went away or does not accept connections yet
(connection lost, Postgres restarting): the same write succeeds later, and every write is
idempotent, so it is retried with back-off for up to ``deadline`` seconds. Anything else
(a constraint, a bad value) fails at once. Past the deadline the caller gets
:class:`DatabaseUnavailable` (retryable) — never a hang.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

from .. import metrics

T = TypeVar("T")
log = get_logger(__name__)

TRANSIENT = (OperationalError, InterfaceError, ConnectionError, OSError, asyncio.TimeoutError)
# SQLSTATE classes of a server that went away or does not accept connections yet:
# 08 connection exception; 57P01-57P03 admin/crash shutdown, "cannot connect now"
# (Postgres restarting). asyncpg's errors of these classes reach us as plain DBAPIError.
TRANSIENT_SQLSTATES = ("08", "57P")


class DatabaseUnavailable(RunnerHostError):
    """The database stayed unreachable for the whole retry budget."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.RUNTIME_ERROR, "database unavailable", retryable=True)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    return bool(exc.connection_invalidated) or sqlstate.startswith(TRANSIENT_SQLSTATES)


async def with_db_retry(fn: Callable[[], Awaitable[T]], *, deadline: float, first_delay: float = 0.05,
                        max_delay: float = 2.0, op: str = "write") -> T:
    """``fn()`` until it succeeds, retrying transient failures for up to ``deadline`` seconds;
    each retry is counted as ``runnerhost_db_retries_total{op}``."""
    delay, waited = first_delay, 0.0
    while True:
        try:
            return await fn()
        except RunnerHostError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            if waited >= deadline:
                raise DatabaseUnavailable() from None
            metrics.db_retried(op, exc)
            log.warning("database error (%s); retrying in %.2fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, max_delay)
