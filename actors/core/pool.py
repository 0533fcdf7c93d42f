"""A lease pool of expensive resources (warm RunActors, runner workers).

Invariants: at most ``max_size`` members exist; a lease beyond that waits
(backpressure) and fails with ``rate_limited`` after ``acquire_timeout``; a
member is never leased twice at once unless ``shared`` (runner workers serve
many runs each — then the least-loaded member is chosen, and the pool grows
only when every member carries ``grow_at`` leases, the new member going to the
caller that made it grow).

An exclusive pool grows in the background: the caller that finds every member
leased starts a creation and takes whichever member is free first — a released
one or the new one. Creating an actor takes ~0.4 s idle and seconds under load,
while a run frees its RunActor in milliseconds, so a caller tied to its own
creation would wait for nothing.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, TypeVar

from protocol.errors import ErrorCode, RunnerHostError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(eq=False)
class Member(Generic[T]):
    item: T
    leases: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class LeasePool(Generic[T]):
    def __init__(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        min_size: int = 0,
        max_size: int = 8,
        shared: bool = False,
        grow_at: int = 1,
        acquire_timeout: float = 30.0,
        name: str = "pool",
    ) -> None:
        if max_size < 1 or min_size < 0 or min_size > max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        self._factory = factory
        self.min_size, self.max_size = min_size, max_size
        self.shared, self.grow_at = shared, max(1, grow_at)
        self.acquire_timeout = acquire_timeout
        self.name = name
        self._members: list[Member[T]] = []
        self._creating = 0
        self._growth_error: BaseException | None = None  # the last background creation failure
        self._growing: set[asyncio.Task] = set()
        self._cond = asyncio.Condition()
        self.peak_size = 0
        self.created = 0

    @property
    def size(self) -> int:
        return len(self._members)

    def members(self) -> list[T]:
        return [m.item for m in self._members]

    def idle(self) -> list[T]:
        """Members without a lease right now."""
        return [m.item for m in self._members if m.leases == 0]

    def in_use(self) -> int:
        return sum(m.leases for m in self._members)

    async def warm(self, count: int | None = None) -> None:
        """Create members up to ``min_size`` (or ``count`` more), never past ``max_size``."""
        target = self.min_size if count is None else self.size + self._creating + count
        missing = min(target, self.max_size) - self.size - self._creating
        if missing <= 0:
            return
        self._creating += missing
        await asyncio.gather(*(self._grow() for _ in range(missing)))

    async def acquire(self) -> T:
        deadline = time.monotonic() + self.acquire_timeout
        async with self._cond:
            while True:
                member = self._pick()
                if member is not None:
                    member.leases += 1
                    return member.item
                if self._growth_error is not None and self.size == 0 and self._creating == 0:
                    error, self._growth_error = self._growth_error, None
                    raise error  # nothing exists and creating failed: this caller gets the failure
                if self.size + self._creating < self.max_size:
                    self._creating += 1
                    if self.shared:
                        break
                    self._grow_in_background()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RunnerHostError(ErrorCode.RATE_LIMITED,
                                          f"{self.name} is at its maximum of {self.max_size}; try again",
                                          retryable=True, details={"pool": self.name})
                try:
                    await asyncio.wait_for(self._cond.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        return await self._create(leases=1)

    async def release(self, item: T) -> None:
        async with self._cond:
            member = self._find(item)
            if member is not None and member.leases > 0:
                member.leases -= 1
                if member.leases == 0:
                    member.idle_since = time.monotonic()
            self._cond.notify_all()

    async def discard(self, item: T) -> None:
        """Drop a member that died; a replacement is created on demand."""
        async with self._cond:
            member = self._find(item)
            if member is not None:
                self._members.remove(member)
            self._cond.notify_all()

    async def shrink_idle(self, idle_for: float) -> list[T]:
        """Remove members idle longer than ``idle_for`` down to ``min_size``; return them."""
        now = time.monotonic()
        removed: list[T] = []
        async with self._cond:
            for member in list(self._members):
                if self.size <= self.min_size:
                    break
                if member.leases == 0 and now - member.idle_since >= idle_for:
                    self._members.remove(member)
                    removed.append(member.item)
        return removed

    def _pick(self) -> Member[T] | None:
        if not self._members:
            return None
        if self.shared:
            best = min(self._members, key=lambda m: m.leases)
            if best.leases < self.grow_at or self.size + self._creating >= self.max_size:
                return best
            return None
        for member in self._members:
            if member.leases == 0:
                return member
        return None

    def _find(self, item: T) -> Member[T] | None:
        for member in self._members:
            if member.item is item or member.item == item:
                return member
        return None

    async def _grow(self) -> None:
        await self._create(leases=0)

    def _grow_in_background(self) -> None:
        """Finish a creation already counted in ``_creating`` without tying a caller to it."""
        async def grow() -> None:
            try:
                await self._create(leases=0, record_failure=True)
            except Exception as exc:  # recorded for the waiters; logged here so it is never silent
                log.warning("%s: creating a member failed: %s", self.name, type(exc).__name__)
        task = asyncio.get_running_loop().create_task(grow())
        self._growing.add(task)
        task.add_done_callback(self._growing.discard)

    async def _create(self, leases: int, record_failure: bool = False) -> T:
        """Finish a creation already counted in ``_creating`` (the count is released either way);
        ``record_failure`` keeps the error for callers waiting on a background creation."""
        try:
            item = await self._factory()
        except BaseException as exc:
            async with self._cond:
                self._creating -= 1
                if record_failure and isinstance(exc, Exception):
                    self._growth_error = exc
                self._cond.notify_all()
            raise
        async with self._cond:
            self._growth_error = None
            self._creating -= 1
            self._members.append(Member(item, leases=leases))
            self.created += 1
            self.peak_size = max(self.peak_size, self.size)
            self._cond.notify_all()
            return item
