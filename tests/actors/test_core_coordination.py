"""Plain coordination logic: steering queue, conversation lanes, bindings, pools, group commit."""
import asyncio

import pytest

from actors.core.batching import GroupCommitter
from actors.core.bindings import AgentEntry, BindingResolver
from actors.core.conversations import ConversationIndex, Decision, conversation_key
from actors.core.pool import LeasePool
from actors.core.steering import SteeringEntry, SteeringQueue
from protocol.agents import AgentConfig, BindingScope, MultitaskStrategy
from protocol.errors import ErrorCode, RunnerHostError

ECHO = "plugin:builtin/echo/default"


# -- steering queue -----------------------------------------------------------------
def entry(i):
    return SteeringEntry(f"e{i}", {"n": i})


def test_steering_queue_is_bounded_fifo_and_audits_every_item_once():
    q = SteeringQueue(capacity=3)
    assert all(q.offer(entry(i)) for i in range(3))
    assert not q.offer(entry(3))  # full: caller falls back to the normal path
    assert [e.source_event_id for e in q.pull("one-at-a-time")] == ["e0"]
    assert [e.source_event_id for e in q.pull("all", limit=1)] == ["e1"]
    assert [e.source_event_id for e in q.close_and_drain()] == ["e2"]
    assert not q.offer(entry(9))  # closed at run end
    with pytest.raises(RunnerHostError):
        q.pull("some")


# -- conversation lanes -------------------------------------------------------------
def test_conversation_key_is_unambiguous():
    assert conversation_key("a", "b", "c", None) != conversation_key("a", None, "bc", None)
    assert conversation_key("a", "b", None, None) is None


@pytest.mark.parametrize("strategy,decision", [
    (MultitaskStrategy.PARALLEL, Decision.START),
    (MultitaskStrategy.ENQUEUE, Decision.QUEUE),
    (MultitaskStrategy.REJECT, Decision.REJECT),
    (MultitaskStrategy.INTERRUPT, Decision.INTERRUPT),
    (MultitaskStrategy.ROLLBACK, Decision.ROLLBACK),
])
def test_second_event_on_a_busy_conversation(strategy, decision):
    idx = ConversationIndex()
    first = idx.admit("k", "r1", ECHO, strategy, steerable=False)
    assert first.decision is Decision.START
    idx.mark_started("r1", object())
    second = idx.admit("k", "r2", ECHO, strategy, steerable=False)
    assert second.decision is decision
    if decision in (Decision.QUEUE, Decision.INTERRUPT, Decision.ROLLBACK):
        assert second.wait_for == ["r1"]
    if decision is Decision.REJECT:
        assert idx.get("r2") is None  # nothing else changes


def test_steer_targets_the_started_steerable_run_and_falls_back_to_queue():
    idx = ConversationIndex()
    idx.admit("k", "r1", ECHO, MultitaskStrategy.STEER, steerable=True)
    handle = object()
    idx.mark_started("r1", handle)
    adm = idx.admit("k", "r2", ECHO, MultitaskStrategy.STEER, steerable=True)
    assert adm.decision is Decision.STEER and adm.target.actor is handle
    assert idx.get("r2") is None
    fb = idx.admit_fallback("k", "r2", ECHO, True)
    assert fb.decision is Decision.QUEUE and fb.wait_for == ["r1"]


async def test_release_wakes_waiters():
    idx = ConversationIndex()
    idx.admit("k", "r1", ECHO, MultitaskStrategy.ENQUEUE, False)
    waiter = asyncio.create_task(idx.wait_released(["r1"], timeout=5))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert idx.release("r1")
    assert await waiter is True
    assert not idx.release("r1")
    assert await idx.wait_released(["nope"], timeout=0.01) is True


def test_conversationless_events_never_conflict():
    idx = ConversationIndex()
    idx.admit(None, "r1", ECHO, MultitaskStrategy.REJECT, False)
    assert idx.admit(None, "r2", ECHO, MultitaskStrategy.REJECT, False).decision is Decision.START


# -- bindings ----------------------------------------------------------------------
def agent(**kw):
    return AgentConfig(runner_id=ECHO, **kw)


def test_binding_by_agent_id_and_by_scope():
    r = BindingResolver()
    r.load([AgentEntry("echo", agent(), 1), AgentEntry("bot1", agent(scope=BindingScope(bot_id="b1")), 3)])
    b = r.resolve(agent_id="echo", event_type="message.received", bot_id=None, workspace_id=None, source="api")
    assert b.agent_id == "echo" and b.binding_id == "echo@1"
    b = r.resolve(agent_id=None, event_type="message.received", bot_id="b1", workspace_id=None, source="api")
    assert b.agent_id == "bot1"


@pytest.mark.parametrize("kwargs,code", [
    (dict(agent_id="ghost"), ErrorCode.NOT_FOUND),
    (dict(agent_id=None, bot_id="nobody"), ErrorCode.NO_BINDING),
    (dict(agent_id="echo", event_type="group.member_joined"), ErrorCode.NO_BINDING),
])
def test_binding_errors_are_clear(kwargs, code):
    r = BindingResolver()
    r.load([AgentEntry("echo", agent(), 1)])
    args = dict(agent_id=None, event_type="message.received", bot_id=None, workspace_id=None, source="api")
    args.update(kwargs)
    with pytest.raises(RunnerHostError) as e:
        r.resolve(**args)
    assert e.value.code is code


def test_ambiguous_routing_is_rejected_at_load():
    r = BindingResolver()
    a = AgentEntry("a", agent(scope=BindingScope(bot_id="b1")), 1)
    b = AgentEntry("b", agent(scope=BindingScope(bot_id="b1")), 1)
    with pytest.raises(RunnerHostError) as e:
        r.load([a, b])
    assert e.value.code is ErrorCode.INVALID_ARGUMENT
    # disjoint event types are fine
    c = AgentEntry("c", agent(scope=BindingScope(bot_id="b1"), event_types=["group.member_joined"]), 1)
    r.load([a, c])
    with pytest.raises(RunnerHostError):
        r.put(b)
    assert set(r.agents) == {"a", "c"}


# -- lease pool --------------------------------------------------------------------
async def test_exclusive_pool_grows_to_max_then_applies_backpressure():
    made = []

    async def factory():
        made.append(object())
        return made[-1]
    pool = LeasePool(factory, min_size=1, max_size=2, acquire_timeout=0.2)
    await pool.warm()
    a = await pool.acquire()
    b = await pool.acquire()
    assert a is not b and pool.size == 2
    with pytest.raises(RunnerHostError) as e:
        await pool.acquire()
    assert e.value.code is ErrorCode.RATE_LIMITED
    waiter = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.01)
    await pool.release(a)
    assert await waiter is a
    assert pool.peak_size == 2
    await pool.discard(b)
    assert pool.size == 1


async def test_shared_pool_spreads_load_and_grows_at_threshold():
    async def factory():
        return object()
    pool = LeasePool(factory, max_size=3, shared=True, grow_at=2)
    leases = [await pool.acquire() for _ in range(6)]
    assert pool.size == 3
    assert all(leases.count(m) == 2 for m in pool.members())
    extra = await pool.acquire()  # at max: least-loaded member is shared further
    assert extra in pool.members()
    for m in leases + [extra]:
        await pool.release(m)
    assert await pool.shrink_idle(0) and pool.size == 0


# -- group commit -------------------------------------------------------------------
async def test_group_commit_batches_and_isolates_a_bad_op():
    batches = []

    async def apply(ops):
        batches.append(list(ops))
        if "bad" in ops:
            raise ValueError("constraint")
        return [f"ok:{op}" for op in ops]
    gc = GroupCommitter(apply, max_batch=50, max_delay=0.01)
    results = await asyncio.gather(*(gc.submit(f"op{i}") for i in range(20)), gc.submit("bad"),
                                   return_exceptions=True)
    assert results[:20] == [f"ok:op{i}" for i in range(20)]
    assert isinstance(results[20], ValueError)
    assert len(batches[0]) == 21  # one transaction for everyone ...
    assert ["bad"] in batches     # ... then the failing op alone
    await gc.close()


async def test_warm_never_exceeds_max_and_counts_creations_in_flight():
    async def factory():
        await asyncio.sleep(0.01)
        return object()
    pool = LeasePool(factory, min_size=3, max_size=4)
    await asyncio.gather(pool.warm(2), pool.warm(), pool.warm(5))
    assert pool.size == 4 and pool.peak_size == 4


async def test_a_caller_that_made_an_exclusive_pool_grow_takes_whichever_member_frees_first():
    async def slow_factory():
        await asyncio.sleep(0.3)  # actor creation: slow, while runs free members in milliseconds
        return object()
    pool = LeasePool(slow_factory, min_size=1, max_size=2, acquire_timeout=5)
    await pool.warm()
    first = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())  # every member leased: starts a creation
    await asyncio.sleep(0.02)
    await pool.release(first)
    assert await asyncio.wait_for(waiter, 0.1) is first  # not held back by the creation it started
    await asyncio.sleep(0.4)
    assert pool.size == 2 and pool.idle() and pool.in_use() == 1  # the new member joined, idle


async def test_exclusive_pool_growth_failure_reaches_callers_when_nothing_exists():
    async def broken_factory():
        raise RuntimeError("cannot create an actor")
    pool = LeasePool(broken_factory, max_size=2, acquire_timeout=5)
    with pytest.raises(RuntimeError, match="cannot create"):
        await asyncio.wait_for(pool.acquire(), 1)
    assert pool.size == 0
