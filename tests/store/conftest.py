"""Helpers for the store suite (database fixtures live in ``tests/conftest.py``)."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

import pytest

from protocol.errors import ErrorCode, RunnerHostError


@pytest.fixture
def uid() -> Callable[..., str]:
    """``uid("conv")`` → ``conv-<random>``: tests share databases, ids keep them apart."""
    return lambda prefix="id": f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def fails_with() -> Callable[[ErrorCode], ContextManager[pytest.ExceptionInfo[RunnerHostError]]]:
    """``with fails_with(ErrorCode.NOT_FOUND): …`` expects a RunnerHostError with that code."""

    @contextmanager
    def check(code: ErrorCode) -> Iterator[pytest.ExceptionInfo[RunnerHostError]]:
        with pytest.raises(RunnerHostError) as info:
            yield info
        assert info.value.code == code, f"expected {code.value}, got {info.value!r}"

    return check
