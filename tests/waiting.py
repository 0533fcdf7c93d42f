"""Bounded waits on observable state: the one way tests synchronise with something that happens elsewhere.

A test never sleeps for "long enough" (a run to be live, a session to exist, a write to land, a
server to come up); it polls what it can observe — a ledger row, a stream frame, a stats counter,
a process table — until a deadline, and fails with a message naming what never happened.

Sleeps that stay in the suite are of three kinds only: inside fakes (a fake runner, server or
factory simulating work), ``sleep(0)`` to let a just-created task run, and letting a product
clock pass a threshold the test is about (an edit interval, a lease, a grow-after delay) — where
an observable state exists even then, the test polls it instead.

* :func:`wait_until` (async): ``predicate`` may be a plain or an ``async`` callable; returns its
  first truthy value.
* :func:`wait_until_sync`: the same for synchronous code (fixtures, threads, subprocess tests);
  ``predicate`` must be a plain callable.

``what`` names the awaited state in the failure message; a callable is called at failure time,
so the message can show the state as it was when the wait gave up.

``retry_on``: exception types that mean "not yet" (a server that refuses connections while it
starts); the last one is quoted in the failure message. Any other exception propagates at once.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable

__all__ = ["wait_until", "wait_until_sync"]


def _failure(what: str | Callable[[], str], timeout: float, last: Any, error: BaseException | None) -> AssertionError:
    if callable(what):
        what = what()
    detail = f"; last error: {type(error).__name__}: {error}" if error is not None else f"; last value: {last!r}"
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail[:2000]}")


async def wait_until(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0,
                     what: str | Callable[[], str] = "the condition", *, interval: float = 0.05,
                     retry_on: tuple[type[BaseException], ...] = ()) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value, error = None, None
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            error = exc
        if error is None and value:
            return value
        if loop.time() >= deadline:
            raise _failure(what, timeout, value, error)
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 10.0,
                    what: str | Callable[[], str] = "the condition", *, interval: float = 0.05, retry_on: tuple[type[BaseException], ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value, error = None, None
        try:
            value = predicate()
        except retry_on as exc:
            error = exc
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise TypeError("wait_until_sync got an awaitable: use wait_until in async code")
        if error is None and value:
            return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, value, error)
        time.sleep(interval)
