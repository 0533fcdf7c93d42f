"""A pool of run slots on expensive members (RunActors, runner workers): the host's capacity.

Each member is a process that serves up to ``slots_per_member`` runs at once. A run takes a
slot through a :class:`Reservation`: satisfied at once when a slot is free, otherwise it
waits in FIFO order and the oldest waiter gets the next slot that frees (handed over
directly — no wake-everyone-and-race).

Invariants:

* members + creations in flight ≤ ``max_size``; what the cluster can place is Ray's to enforce
  (a member beyond the free run slots stays pending, see ``blocked()`` below);
* at most ``max_creating`` creations are in flight, each abandoned after ``create_timeout``
  (the factory is cancelled and must clean up what it started) — except while ``blocked()``
  says the cluster has no room for a member (e.g. no free ``runnerhost_run_slot``): a creation
  that still serves a waiter then stays pending, since a pending RunActor is exactly the demand
  the Ray autoscaler adds a node for; it is looked at again every ``create_timeout``, on a fresh
  look (``refresh_blocked``) rather than the last periodic one;
* while ``blocked()``, creations nobody needs any more (their waiters gave up or were served by
  a freed slot) are cancelled at once: a pending member nobody waits for would make the
  autoscaler add a node for nothing;
* a creation starts only for demand nobody covers yet: waiters beyond the slots that
  creations in flight will bring, and only once the line has stood still for ``grow_after``
  seconds — no slot freed while the oldest waiter waited that long. Short runs keep the line
  moving and are served by the members there are (more processes would only compete for the
  same cores); long runs hold their slots and the pool grows for them. A waiter that gives
  up (cancelled) is no demand any more;
* at most ``max_waiting`` reservations wait; beyond that ``reserve`` raises ``rate_limited``;
* ``overcommit`` pools (runner workers: async processes that serve many runs) never make a
  run wait while a member exists: past its slots, the least-loaded member takes it, and the
  pool grows in the background.

When nothing exists, nothing is being created and the last creation failed, the waiters get
that failure instead of waiting forever (a broken runner fails its runs, it does not hang).
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, TypeVar

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(eq=False)
class _Member(Generic[T]):
    item: T
    leases: int = 0
    idle_since: float = field(default_factory=time.monotonic)


class Reservation(Generic[T]):
    """A run's claim on a slot: ``member`` once granted; ``position`` in line when it waited
    (1 = next); ``await reservation.wait()`` until granted; ``cancel()`` gives the claim up."""

    def __init__(self, pool: "SlotPool[T]", position: int) -> None:
        self._pool = pool
        self.position = position
        self.member: T | None = None
        self.enqueued_at = time.monotonic()
        self._future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    @property
    def granted(self) -> bool:
        return self.member is not None

    async def wait(self, timeout: float | None = None) -> T:
        if self.member is not None:
            return self.member
        try:
            return await asyncio.wait_for(asyncio.shield(self._future), timeout)
        except (asyncio.CancelledError, asyncio.TimeoutError):
            self.cancel()
            raise

    def cancel(self) -> None:
        """Give the claim up; a slot already granted goes back to the pool (to the next waiter)."""
        self._pool._withdraw(self)

    def _grant(self, member: T) -> None:
        self.member = member
        if not self._future.done():
            self._future.set_result(member)

    def _fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)
            self._future.exception()  # retrieved here: a waiter that gave up must not warn


class SlotPool(Generic[T]):
    def __init__(
        self,
        factory: Callable[[], Awaitable[T]],
        *,
        name: str,
        slots_per_member: int = 1,
        min_size: int = 0,
        max_size: int = 8,
        max_creating: int = 2,
        create_timeout: float = 60.0,
        grow_after: float = 0.0,
        max_waiting: int = 10_000,
        overcommit: bool = False,
        blocked: Callable[[], bool] | None = None,
        refresh_blocked: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_size < 1 or min_size < 0 or min_size > max_size or slots_per_member < 1 or max_creating < 1:
            raise ValueError("need 0 <= min_size <= max_size, max_size >= 1, slots_per_member >= 1, "
                             "max_creating >= 1")
        self.name = name
        self._factory = factory
        self.slots_per_member = slots_per_member
        self.min_size, self.max_size = min_size, max_size
        self.max_creating = max_creating
        self.create_timeout = create_timeout
        self.grow_after = grow_after
        self.max_waiting = max_waiting
        self.overcommit = overcommit
        self._blocked = blocked
        self._refresh_blocked = refresh_blocked
        self._members: list[_Member[T]] = []
        self._waiting: collections.deque[Reservation[T]] = collections.deque()
        self._creating = 0
        self._creations: dict[asyncio.Task, None] = {}   # insertion-ordered: the newest last
        self._trimmed: set[asyncio.Task] = set()          # cancelled because nobody needs them
        self._growth_timer: asyncio.TimerHandle | None = None
        self._last_failure: BaseException | None = None
        self._last_release = float("-inf")  # monotonic time a slot last went to a waiter or back
        self.created = 0
        self.failed_creations = 0
        self.trimmed_creations = 0
        self.kept_pending = 0
        self.peak_size = 0
        self.peak_waiting = 0

    # -- observation --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def creating(self) -> int:
        return self._creating

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def leased(self) -> int:
        return sum(m.leases for m in self._members)

    def members(self) -> list[T]:
        return [m.item for m in self._members]

    def idle(self) -> list[T]:
        return [m.item for m in self._members if m.leases == 0]

    def stats(self) -> dict[str, int | str]:
        return {"name": self.name, "size": self.size, "leased": self.leased(), "creating": self._creating,
                "max": self.max_size, "queue_length": self.waiting,
                "slots_per_member": self.slots_per_member, "created": self.created,
                "failed_creations": self.failed_creations, "trimmed_creations": self.trimmed_creations,
                "kept_pending": self.kept_pending, "peak_size": self.peak_size,
                "peak_queue_length": self.peak_waiting}

    # -- leasing ----------------------------------------------------------------------------------
    def try_reserve(self) -> Reservation[T] | None:
        """A granted reservation when a slot is free and nobody waits, else None (nothing queued)."""
        if self._waiting and not self.overcommit:
            return None
        member = self._pick()
        if member is None or member.leases >= self.slots_per_member:
            return None
        reservation = Reservation(self, 0)
        member.leases += 1
        reservation._grant(member.item)
        return reservation

    def reserve(self) -> Reservation[T]:
        """Claim a slot: granted now when one is free, else queued FIFO (grows the pool if due)."""
        if self._waiting and not self.overcommit:
            member = None  # others are already in line
        else:
            member = self._pick()
        if member is not None:
            reservation = Reservation(self, 0)
            member.leases += 1
            reservation._grant(member.item)
            if self.overcommit and member.leases > self.slots_per_member:
                self._grow(urgent=True)  # past its slots: a new member for the next runs
            return reservation
        if len(self._waiting) >= self.max_waiting:
            raise RunnerHostError(ErrorCode.RATE_LIMITED,
                                  f"{self.name}: {self.max_waiting} runs are already waiting for a slot",
                                  retryable=True, details={"pool": self.name, "waiting": len(self._waiting)})
        reservation = Reservation(self, len(self._waiting) + 1)
        self._waiting.append(reservation)
        self.peak_waiting = max(self.peak_waiting, len(self._waiting))
        if not self._members and not self._creating and self._last_failure is not None:
            self._last_failure = None  # a new try: creation may succeed now
        self._grow()
        return reservation

    def release(self, item: T) -> None:
        """A run is done with its slot: it goes to the oldest waiter, else back to the pool."""
        member = self._find(item)
        if member is None or member.leases == 0:
            return  # discarded meanwhile (it died): the slot went with it
        member.leases -= 1
        self._last_release = time.monotonic()
        if member.leases == 0:
            member.idle_since = self._last_release
        self._hand_over()
        self._trim_creations()

    def kick(self) -> None:
        """Re-evaluate growth (capacity changed: e.g. a node with free slots joined)."""
        self._grow()

    def discard(self, item: T) -> None:
        """Drop a member that died; its runs release nothing (their slots went with it)."""
        member = self._find(item)
        if member is not None:
            self._members.remove(member)
        self._grow()

    def is_blocked(self) -> bool:
        """Whether the cluster has no room for another member right now (``blocked``)."""
        if self._blocked is None:
            return False
        try:
            return bool(self._blocked())
        except Exception as exc:  # a failing probe: act as if there were room (the old timeout rule)
            log.warning("%s: blocked probe failed (%s)", self.name, exc)
            return False

    async def _refresh_room(self) -> None:
        if self._refresh_blocked is None:
            return
        try:
            await self._refresh_blocked()
        except Exception as exc:  # keep the last look
            log.warning("%s: refreshing the room probe failed (%s)", self.name, exc)

    async def warm(self, count: int | None = None) -> None:
        """Create members up to ``min_size`` (or ``count`` more), within ``max_size`` and at most
        ``max_creating`` at a time (process starts in parallel only thrash a small machine); waits
        for them. A failed creation ends the warm-up (the next upkeep tries again)."""
        target = min(self.max_size, self.min_size if count is None else self.size + self._creating + count)
        failures = self.failed_creations
        mine: set[asyncio.Task] = set()
        while True:
            missing = target - self.size - self._creating
            failed = self.failed_creations != failures
            room = 0 if failed else min(missing, self.max_creating - self._creating)
            mine.update(self._start_creation() for _ in range(max(0, room)))
            mine = {task for task in mine if not task.done()}
            busy = mine
            if not busy and missing > 0 and not failed and not self.is_blocked():
                busy = set(self._creations)  # others' hold every creation slot: wait for a free one
            if not busy:  # done (or no room on the cluster: their creations may stay pending long)
                return
            await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)

    def shrink_idle(self, idle_for: float) -> list[T]:
        """Remove members idle longer than ``idle_for`` down to ``min_size`` (never while runs
        wait); the caller destroys what this returns."""
        if self._waiting:
            return []
        now = time.monotonic()
        removed: list[T] = []
        for member in list(self._members):
            if self.size <= self.min_size:
                break
            if member.leases == 0 and now - member.idle_since >= idle_for:
                self._members.remove(member)
                removed.append(member.item)
        return removed

    async def close(self) -> None:
        """Stop growing; waiters are failed; creations in flight are cancelled."""
        if self._growth_timer is not None:
            self._growth_timer.cancel()
        error = RunnerHostError(ErrorCode.RUNTIME_ERROR, f"{self.name} is closed", retryable=True)
        while self._waiting:
            self._waiting.popleft()._fail(error)
        tasks = list(self._creations)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------------
    def _pick(self) -> _Member[T] | None:
        if not self._members:
            return None
        best = min(self._members, key=lambda m: m.leases)
        if best.leases < self.slots_per_member:
            return best
        return best if self.overcommit else None

    def _find(self, item: T) -> _Member[T] | None:
        for member in self._members:
            if member.item is item or member.item == item:
                return member
        return None

    def _withdraw(self, reservation: Reservation[T]) -> None:
        if reservation.member is not None:
            item, reservation.member = reservation.member, None
            self.release(item)
            return
        try:
            self._waiting.remove(reservation)
        except ValueError:
            pass
        if not reservation._future.done():
            reservation._future.cancel()
        self._trim_creations()

    def _hand_over(self) -> None:
        """Give free slots to waiters, oldest first."""
        while self._waiting:
            member = self._pick()
            if member is None:
                break
            reservation = self._waiting.popleft()
            member.leases += 1
            reservation._grant(member.item)

    def _uncovered_demand(self) -> int:
        """Waiters that neither a free slot nor a creation in flight will serve (in members)."""
        uncovered = len(self._waiting) - self._creating * self.slots_per_member
        return -(-uncovered // self.slots_per_member) if uncovered > 0 else 0

    def _needed_creations(self) -> int:
        """Creations in flight that someone still needs: uncovered waiters and the minimum size."""
        waiting = -(-len(self._waiting) // self.slots_per_member)
        return waiting + max(0, self.min_size - self.size)

    def _trim_creations(self) -> None:
        """While the cluster has no room, cancel the newest creations nobody needs any more."""
        surplus = self._creating - len(self._trimmed) - self._needed_creations()
        if surplus <= 0 or not self.is_blocked():
            return
        for task in reversed(list(self._creations)):
            if surplus <= 0:
                break
            if task in self._trimmed or task.done():
                continue
            self._trimmed.add(task)
            task.cancel()
            surplus -= 1

    def _grow(self, urgent: bool = False) -> None:
        """Start the creations that uncovered demand justifies, within every bound."""
        wanted = 1 if urgent and not self._creating else self._uncovered_demand()
        if wanted <= 0:
            return
        if not urgent and self.grow_after > 0 and self._waiting:
            still = time.monotonic() - max(self._waiting[0].enqueued_at, self._last_release)
            if still < self.grow_after:  # the line moves (or just formed): check again later
                self._schedule_growth(self.grow_after - still)
                return
        room = min(wanted, self.max_creating - self._creating, self.max_size - self.size - self._creating)
        for _ in range(max(0, room)):
            self._start_creation()

    def _schedule_growth(self, delay: float) -> None:
        if self._growth_timer is not None:
            return

        def fire() -> None:
            self._growth_timer = None
            self._grow()
        self._growth_timer = asyncio.get_running_loop().call_later(delay, fire)

    def _start_creation(self) -> asyncio.Task:
        self._creating += 1
        task = asyncio.get_running_loop().create_task(self._create())
        self._creations[task] = None

        def done(t: asyncio.Task) -> None:
            self._creations.pop(t, None)
            self._trimmed.discard(t)
        task.add_done_callback(done)
        return task

    async def _until_ready(self) -> T:
        """The factory's member; abandoned (cancelled) after ``create_timeout`` unless the cluster
        has no room and a waiter still needs it: then it stays pending (the autoscaler's signal)."""
        creation = asyncio.ensure_future(self._factory())
        try:
            while True:
                done, _ = await asyncio.wait({creation}, timeout=self.create_timeout)
                if done:
                    return creation.result()
                if self._waiting:
                    await self._refresh_room()  # decide on a fresh look, not the last upkeep's
                if not (self._waiting and self.is_blocked()):
                    raise asyncio.TimeoutError()
                self.kept_pending += 1
                log.info("%s: a member waits for room on the cluster (%d runs waiting); kept pending",
                         self.name, len(self._waiting))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task in self._trimmed and creation.done() and not creation.cancelled() \
                    and creation.exception() is None:
                self._trimmed.discard(task)   # it was ready just as it was trimmed: keep it, leak nothing
                if task is not None:
                    task.uncancel()
                return creation.result()
            raise
        finally:
            if not creation.done():
                creation.cancel()
                await asyncio.gather(creation, return_exceptions=True)

    async def _create(self) -> None:
        try:
            item = await self._until_ready()
        except BaseException as exc:
            self._creating -= 1
            task = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and task in self._trimmed:
                self.trimmed_creations += 1   # nobody needed it: no failure, nothing for waiters
                raise
            self.failed_creations += 1
            self._last_failure = exc if isinstance(exc, Exception) else RunnerHostError(
                ErrorCode.RUNTIME_ERROR, f"{self.name}: creating a member was cancelled", retryable=True)
            if isinstance(exc, asyncio.TimeoutError):
                log.warning("%s: a member was not ready within %.0f s; abandoned", self.name,
                            self.create_timeout)
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("%s: creating a member failed", self.name, exc_info=True)
            if not self._members and not self._creating:
                failure = self._failure_error()
                while self._waiting:
                    self._waiting.popleft()._fail(failure)
            else:
                self._grow()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._creating -= 1
        self._last_failure = None
        self._members.append(_Member(item))
        self.created += 1
        self.peak_size = max(self.peak_size, self.size)
        self._hand_over()
        self._grow()
        self._trim_creations()

    def _failure_error(self) -> RunnerHostError:
        cause = self._last_failure
        if isinstance(cause, RunnerHostError):
            return cause
        return RunnerHostError(ErrorCode.RUNTIME_ERROR, f"{self.name}: no member could be created "
                               f"({type(cause).__name__ if cause else 'unknown'})", retryable=True)
