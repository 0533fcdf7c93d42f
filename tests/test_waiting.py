"""The shared bounded waits: they return the first truthy value and fail loudly, naming what never happened."""
from __future__ import annotations

import itertools

import pytest

from tests.waiting import wait_until, wait_until_sync


async def test_async_wait_returns_the_first_truthy_value_of_a_sync_or_async_predicate():
    counter = itertools.count()
    assert await wait_until(lambda: next(counter) >= 3 and "ready", timeout=5, interval=0.001) == "ready"

    calls = itertools.count()

    async def probe():
        return next(calls) == 2
    assert await wait_until(probe, timeout=5, interval=0.001) is True


async def test_async_wait_fails_with_what_it_waited_for():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the run to start; last value: \[\]"):
        await wait_until(lambda: [], timeout=0.05, what="the run to start", interval=0.01)


async def test_async_wait_retries_only_the_named_errors_and_quotes_the_last():
    def refused():
        raise ConnectionRefusedError("nobody home")
    with pytest.raises(AssertionError, match="last error: ConnectionRefusedError: nobody home"):
        await wait_until(refused, timeout=0.05, retry_on=(ConnectionRefusedError,), interval=0.01)
    with pytest.raises(ConnectionRefusedError):  # not named: propagates at once
        await wait_until(refused, timeout=5)


def test_sync_wait_returns_and_fails_the_same_way():
    counter = itertools.count()
    assert wait_until_sync(lambda: next(counter) == 2, timeout=5, interval=0.001) is True
    with pytest.raises(AssertionError, match="waiting for the server"):
        wait_until_sync(lambda: None, timeout=0.05, what="the server", interval=0.01)

    async def coroutine_function():
        return True
    with pytest.raises(TypeError):
        wait_until_sync(coroutine_function, timeout=1)
