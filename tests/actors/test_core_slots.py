"""SlotPool: the host's capacity — FIFO slots, bounded and demand-driven growth, no creation storms."""
import asyncio

import pytest

from actors.core.slots import SlotPool
from protocol.errors import ErrorCode, RunnerHostError
from tests.waiting import wait_until


class Factory:
    """Counts creations, how many ran at once, and which were cancelled."""

    def __init__(self, delay: float = 0.0, fail: bool = False, hang: bool = False) -> None:
        self.delay, self.fail, self.hang = delay, fail, hang
        self.started = 0
        self.running = 0
        self.peak_running = 0
        self.cancelled = 0

    async def __call__(self) -> object:
        self.started += 1
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            return await self.create()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def create(self) -> object:
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("cannot create an actor")
        return object()


async def settle(pool: SlotPool, timeout: float = 2.0) -> None:
    await wait_until(lambda: not pool.creating, timeout=timeout, interval=0.005, what="the pool's creations to finish")


async def test_a_freed_slot_goes_to_the_oldest_waiter_and_no_one_else_wakes():
    pool = SlotPool(Factory(), name="t", max_size=1, grow_after=10)
    await pool.warm(1)
    holder = pool.reserve()
    assert holder.granted
    waiters = [pool.reserve() for _ in range(3)]
    assert [w.position for w in waiters] == [1, 2, 3] and not any(w.granted for w in waiters)
    holder.cancel()  # the run is done with its slot
    assert waiters[0].granted and not waiters[1].granted and not waiters[2].granted
    waiters[0].cancel()
    assert waiters[1].granted and not waiters[2].granted
    assert pool.created == 1  # nothing was created for a line that a release served


async def test_growth_is_bounded_by_concurrent_creations_and_by_the_maximum():
    factory = Factory(delay=0.05)
    pool = SlotPool(factory, name="t", max_size=5, max_creating=2)
    waiters = [pool.reserve() for _ in range(12)]
    await asyncio.gather(*(w.wait(2) for w in waiters[:5]))
    await settle(pool)
    assert factory.peak_running == 2      # never a storm: two creations at a time
    assert pool.size == 5 and factory.started == 5  # room for five, no more
    assert sum(w.granted for w in waiters) == 5


async def test_no_creation_for_a_caller_that_gave_up():
    factory = Factory(delay=0.05)
    pool = SlotPool(factory, name="t", max_size=10, grow_after=0.1)
    gone = [pool.reserve() for _ in range(4)]
    for w in gone:
        w.cancel()  # the clients timed out before the pool decided to grow
    await asyncio.sleep(0.2)
    assert factory.started == 0 and pool.waiting == 0


async def test_creations_in_flight_cover_waiters_no_second_creation_per_waiter():
    factory = Factory(delay=0.1)
    pool = SlotPool(factory, name="t", max_size=10, slots_per_member=4, max_creating=4)
    waiters = [pool.reserve() for _ in range(4)]
    await asyncio.gather(*(w.wait(1) for w in waiters))
    await settle(pool)
    assert factory.started == 1  # one member brings four slots: one creation serves all four
    assert pool.size == 1 and pool.leased() == 4


async def test_a_moving_line_creates_nothing_a_line_standing_still_grows_the_pool():
    factory = Factory()
    pool = SlotPool(factory, name="t", max_size=4, grow_after=0.15)
    await pool.warm(1)
    holder = pool.reserve()
    line = [pool.reserve() for _ in range(5)]
    for _ in range(5):  # short runs: a slot frees every 50 ms, the line keeps moving
        await asyncio.sleep(0.05)
        holder.cancel()
        holder = next(r for r in line if r.granted)
        line.remove(holder)
    assert factory.started == 1  # no creation while the line moved
    stuck = pool.reserve()  # now nothing frees: after grow_after the pool grows
    await stuck.wait(2)
    assert factory.started == 2


async def test_grow_after_lets_a_burst_free_its_own_slots():
    factory = Factory()
    pool = SlotPool(factory, name="t", max_size=4, grow_after=0.2)
    await pool.warm(1)
    first = pool.reserve()
    second = pool.reserve()
    await asyncio.sleep(0.02)
    first.cancel()  # a short run ends in milliseconds
    assert second.granted
    await asyncio.sleep(0.3)
    assert factory.started == 1  # only the warm one
    third = pool.reserve()  # nothing frees this time: the pool grows after grow_after
    await third.wait(2)
    assert factory.started == 2


async def test_a_hung_creation_is_abandoned_and_its_count_released():
    factory = Factory(hang=True)
    pool = SlotPool(factory, name="t", max_size=2, create_timeout=0.1)
    waiter = pool.reserve()
    with pytest.raises(RunnerHostError):  # nothing exists and the creation failed: the run learns it
        await waiter.wait(2)
    assert pool.creating == 0 and factory.cancelled == 1 and pool.failed_creations == 1


async def test_creation_failure_reaches_waiters_only_when_nothing_can_serve_them():
    pool = SlotPool(Factory(fail=True), name="t", max_size=2)
    waiter = pool.reserve()
    with pytest.raises(RunnerHostError, match="RuntimeError") as error:
        await waiter.wait(2)
    assert error.value.retryable  # in the error model, never a raw exception
    assert pool.size == 0 and pool.waiting == 0


async def test_slots_per_member_and_a_full_line_is_rate_limited():
    pool = SlotPool(Factory(), name="t", max_size=2, slots_per_member=3, max_waiting=2, grow_after=10)
    await pool.warm(2)
    held = [pool.reserve() for _ in range(6)]
    assert all(r.granted for r in held) and pool.leased() == 6 and pool.size == 2
    line = [pool.reserve(), pool.reserve()]
    assert not any(r.granted for r in line)
    with pytest.raises(RunnerHostError) as error:
        pool.reserve()
    assert error.value.code is ErrorCode.RATE_LIMITED and error.value.retryable


async def test_try_reserve_never_queues_and_never_jumps_the_line():
    pool = SlotPool(Factory(), name="t", max_size=1, grow_after=10)
    await pool.warm(1)
    first = pool.try_reserve()
    assert first is not None and first.granted
    assert pool.try_reserve() is None and pool.waiting == 0
    queued = pool.reserve()
    first.cancel()
    assert queued.granted and pool.try_reserve() is None


async def test_overcommit_pool_never_makes_a_run_wait_while_a_member_exists():
    factory = Factory(delay=0.05)
    pool = SlotPool(factory, name="workers", max_size=2, slots_per_member=2, overcommit=True)
    await pool.warm(1)
    leases = [pool.reserve() for _ in range(5)]
    assert all(r.granted for r in leases)  # past its slots the member takes more ...
    await settle(pool)
    assert pool.size == 2  # ... and the pool grew in the background for the next runs
    late = pool.reserve()
    assert late.member is not leases[0].member  # the least-loaded member


async def test_warm_is_bounded_by_the_maximum_and_shrink_waits_for_an_empty_line():
    factory = Factory(delay=0.01)
    pool = SlotPool(factory, name="t", min_size=3, max_size=3)
    await asyncio.gather(pool.warm(2), pool.warm(), pool.warm(5))
    assert pool.size == 3
    holders = [pool.reserve() for _ in range(3)]
    waiting = pool.reserve()
    assert pool.shrink_idle(0) == []  # never shrink while runs wait
    for h in holders:
        h.cancel()
    waiting.cancel()
    pool.min_size = 1
    assert len(pool.shrink_idle(0)) == 2 and pool.size == 1


async def test_warm_up_creates_at_most_max_creating_at_once_and_stops_at_a_failure():
    factory = Factory(delay=0.01)
    pool = SlotPool(factory, name="t", min_size=7, max_size=8, max_creating=2)
    await pool.warm()
    assert pool.size == 7 and factory.started == 7 and factory.peak_running == 2 and not pool.creating
    await pool.warm(3)  # three more, capped by the maximum
    assert pool.size == 8 and factory.peak_running == 2

    broken = Factory(delay=0.01, fail=True)
    pool = SlotPool(broken, name="t", min_size=6, max_size=8, max_creating=2)
    await asyncio.wait_for(pool.warm(), 2)  # returns: no endless retry of a broken factory
    assert broken.started == 2 and pool.size == 0 and pool.failed_creations == 2


async def test_warm_up_never_waits_on_a_creation_kept_pending_for_the_autoscaler():
    factory = Factory(hang=True)  # no node has room: the member never comes
    pool = SlotPool(factory, name="t", min_size=2, max_size=4, max_creating=1, blocked=lambda: True)
    waiter = pool.reserve()       # its creation holds the one creation slot, pending
    assert pool.creating == 1
    await asyncio.wait_for(pool.warm(), 1)  # returns: the host's upkeep is not held hostage
    assert pool.creating == 1 and factory.started == 1
    waiter.cancel()
    await pool.close()


async def test_a_cancelled_wait_gives_a_just_granted_slot_to_the_next_in_line():
    pool = SlotPool(Factory(), name="t", max_size=1, grow_after=10)
    await pool.warm(1)
    holder = pool.reserve()
    impatient = pool.reserve()
    patient = pool.reserve()
    task = asyncio.create_task(impatient.wait())
    await asyncio.sleep(0)
    holder.cancel()        # granted to `impatient` ...
    task.cancel()          # ... which gives up in the same instant
    with pytest.raises(asyncio.CancelledError):
        await task
    assert patient.granted  # the slot was not lost


# -- a cluster without room: creations stay pending (the autoscaler's demand), bounded ---------------
class Room:
    """The cluster's free room as the host sees it, and a gate that holds creations (an actor
    PENDING_CREATION) until a node joins."""

    def __init__(self) -> None:
        self.full = True
        self.node_joined = asyncio.Event()

    def blocked(self) -> bool:
        return self.full

    def join(self) -> None:
        self.full = False
        self.node_joined.set()


class PendingFactory(Factory):
    def __init__(self, room: Room) -> None:
        super().__init__()
        self.room = room

    async def create(self) -> object:
        await self.room.node_joined.wait()  # PENDING_CREATION until a node with room joins
        return object()


async def test_without_room_creations_stay_pending_past_the_timeout_while_runs_wait():
    room = Room()
    factory = PendingFactory(room)
    pool = SlotPool(factory, name="t", max_size=10, max_creating=2, create_timeout=0.05, blocked=room.blocked)
    waiters = [pool.reserve() for _ in range(5)]
    await wait_until(lambda: pool.kept_pending >= 4, timeout=2.0, interval=0.005, what="creations kept pending")      # several create_timeouts went by ...
    assert factory.started == 2 and factory.cancelled == 0 and pool.creating == 2   # ... bounded, kept
    assert pool.failed_creations == 0 and not any(w.granted for w in waiters)
    room.join()                                           # the autoscaler added a node
    await asyncio.gather(*(w.wait(2) for w in waiters))
    assert pool.size == 5 and factory.peak_running == 2 and pool.failed_creations == 0


async def test_without_room_a_creation_nobody_waits_for_is_cancelled_at_once():
    room = Room()
    factory = PendingFactory(room)
    pool = SlotPool(factory, name="t", max_size=10, max_creating=2, create_timeout=60, blocked=room.blocked)
    waiters = [pool.reserve() for _ in range(3)]
    await wait_until(lambda: factory.started == 2, timeout=2.0, interval=0.005, what="two creations started")
    waiters[2].cancel()                 # 2 waiters left: both creations still needed
    await asyncio.sleep(0.01)
    assert factory.cancelled == 0 and pool.creating == 2
    waiters[1].cancel()                 # the caller timed out: one creation is surplus
    await wait_until(lambda: factory.cancelled == 1, timeout=2.0, interval=0.005, what="one creation cancelled")
    assert pool.creating == 1 and pool.trimmed_creations == 1 and pool.failed_creations == 0
    waiters[0].cancel()
    await wait_until(lambda: pool.creating == 0, timeout=2.0, interval=0.005, what="no creation in flight")
    assert factory.cancelled == 2 and factory.started == 2 and pool.waiting == 0
    room.join()
    await asyncio.sleep(0.01)
    assert pool.size == 0               # nothing was created for callers that gave up


async def test_with_room_a_creation_not_ready_in_time_is_abandoned_as_before():
    room = Room()
    room.full = False                   # the cluster has room: a slow creation is a broken one
    factory = PendingFactory(room)
    pool = SlotPool(factory, name="t", max_size=2, create_timeout=0.05, blocked=room.blocked)
    waiter = pool.reserve()
    with pytest.raises(RunnerHostError):
        await waiter.wait(2)
    assert factory.cancelled == 1 and pool.failed_creations == 1 and pool.kept_pending == 0


async def test_a_stale_look_that_shows_room_is_refreshed_before_a_pending_creation_is_abandoned():
    room = Room()
    factory = PendingFactory(room)
    looked = {"fresh": 0}
    stale = {"full": False}            # the last periodic look said "room" (e.g. before the pool filled it)

    async def refresh() -> None:       # a fresh look at the cluster: still full
        looked["fresh"] += 1
        stale["full"] = room.full

    pool = SlotPool(factory, name="t", max_size=10, max_creating=1, create_timeout=0.05,
                    blocked=lambda: stale["full"], refresh_blocked=refresh)
    waiter = pool.reserve()
    await wait_until(lambda: pool.kept_pending >= 2, timeout=2.0, interval=0.005, what="the creation kept pending")
    assert looked["fresh"] >= 2 and pool.failed_creations == 0 and factory.cancelled == 0
    room.join()
    await waiter.wait(2)
    assert pool.size == 1 and pool.failed_creations == 0
