"""Plain coordination logic: steering queue, conversation lanes, bindings, group commit."""
import asyncio

import pytest

from actors.core.batching import GroupCommitter
from actors.core.bindings import AgentEntry, BindingResolver
from actors.core.conversations import ConversationIndex, Decision, conversation_key
from actors.core.db_retry import DatabaseUnavailable
from actors.core.steering import SteeringEntry, SteeringQueue
from protocol.agents import AgentConfig, BindingScope, MultitaskStrategy
from protocol.errors import ErrorCode, RunnerHostError
from tests.waiting import wait_until

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
    assert await waiter == "released"
    assert not idx.release("r1")
    assert await idx.wait_released(["nope"], timeout=0.01) == "released"


async def test_a_waiting_run_that_is_cancelled_stops_waiting_and_a_stuck_lane_times_out():
    idx = ConversationIndex()
    idx.admit("k", "r1", ECHO, MultitaskStrategy.ENQUEUE, False)
    idx.mark_started("r1", object())
    idx.admit("k", "r2", ECHO, MultitaskStrategy.ENQUEUE, False)
    waiter = asyncio.create_task(idx.wait_released(["r1"], timeout=5, waiter="r2"))
    await asyncio.sleep(0)
    assert idx.request_cancel("r2") and not idx.request_cancel("r1")  # r1 started: its actor cancels it
    assert await waiter == "cancelled"
    assert await idx.wait_released(["r1"], timeout=0.01) == "timeout"


def test_a_re_sent_event_is_a_duplicate_while_admitted_and_after_release():
    idx = ConversationIndex()
    first = idx.admit("k", "r1", ECHO, MultitaskStrategy.REJECT, False, event_id="e1", digest="d1")
    assert first.decision is Decision.START
    again = idx.admit("k", "r2", ECHO, MultitaskStrategy.REJECT, False, event_id="e1", digest="d1")
    assert again.decision is Decision.DUPLICATE and again.target.run_id == "r1" and again.same_body
    other = idx.admit("k", "r3", ECHO, MultitaskStrategy.REJECT, False, event_id="e1", digest="d2")
    assert other.decision is Decision.DUPLICATE and not other.same_body  # → 409 conflict
    assert idx.get("r2") is None and idx.get("r3") is None  # a duplicate takes no lane
    assert idx.admit("k", "r1", ECHO, MultitaskStrategy.REJECT, False, event_id="e1") is first  # retried admit
    idx.release("r1")
    late = idx.admit("k", "r4", ECHO, MultitaskStrategy.REJECT, False, event_id="e1", digest="d1")
    assert late.decision is Decision.DUPLICATE and late.wait_for == ["r1"]


def test_the_lanes_of_a_gone_host_are_released_as_a_whole():
    idx = ConversationIndex()
    idx.admit("k1", "a1", ECHO, MultitaskStrategy.ENQUEUE, False, host_id="A")
    idx.admit("k2", "a2", ECHO, MultitaskStrategy.ENQUEUE, False, host_id="A")
    idx.admit("k1", "b1", ECHO, MultitaskStrategy.ENQUEUE, False, host_id="B")
    assert sorted(idx.release_host("A")) == ["a1", "a2"]
    assert [e.run_id for e in idx.entries()] == ["b1"]
    assert idx.admit("k2", "b2", ECHO, MultitaskStrategy.REJECT, False, host_id="B").decision is Decision.START


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


async def test_group_commit_does_not_replay_op_by_op_when_the_database_itself_failed():
    batches = []

    async def apply(ops):
        batches.append(list(ops))
        raise DatabaseUnavailable()
    gc = GroupCommitter(apply, max_batch=50, max_delay=0.01, isolate=lambda exc: not isinstance(exc, DatabaseUnavailable))
    results = await asyncio.gather(*(gc.submit(i) for i in range(10)), return_exceptions=True)
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert len(batches) == 1  # not ten more attempts, each with its own retry budget
    await gc.close()


async def test_group_commit_backlog_is_bounded():
    entered, release = asyncio.Event(), asyncio.Event()

    async def apply(ops):
        entered.set()
        await release.wait()
        return list(ops)
    gc = GroupCommitter(apply, max_batch=2, max_delay=0.0, max_backlog=3)
    accepted = [asyncio.create_task(gc.submit(i)) for i in range(2)]
    await asyncio.wait_for(entered.wait(), 5)  # these two are in the (stuck) flushing batch ...
    accepted += [asyncio.create_task(gc.submit(i)) for i in range(2, 5)]
    await wait_until(lambda: gc.backlog == 3, timeout=5, what="three ops waiting behind the stuck batch")
    assert gc.uncommitted() == [0, 1, 2, 3, 4]  # ... and three wait: the backlog is full
    with pytest.raises(RunnerHostError) as error:
        await gc.submit("one too many")
    assert error.value.code is ErrorCode.RATE_LIMITED and error.value.retryable
    release.set()
    assert await asyncio.gather(*accepted) == [0, 1, 2, 3, 4]
    await gc.close()


async def test_group_commit_reports_what_is_not_committed_yet():
    """What a crash at this instant would interrupt: the batch in flight, then those waiting."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def apply(ops):
        entered.set()
        await release.wait()
        return list(ops)
    gc = GroupCommitter(apply, max_batch=2, max_delay=0.0)
    first = [asyncio.create_task(gc.submit(i)) for i in range(2)]
    await entered.wait()  # 0 and 1 are being committed
    waiting = asyncio.create_task(gc.submit(2))
    await asyncio.sleep(0)
    assert gc.uncommitted() == [0, 1, 2]
    release.set()
    assert await asyncio.gather(*first, waiting) == [0, 1, 2]
    assert gc.uncommitted() == []
    await gc.close()


async def test_group_commit_drain_waits_for_the_batch_in_flight_and_those_waiting_then_refuses():
    """A storage actor about to be replaced drains: nothing accepted before the drain is left
    uncommitted when it returns, and nothing is accepted after it."""
    entered, release = asyncio.Event(), asyncio.Event()
    committed: list[int] = []

    async def apply(ops):
        entered.set()
        await release.wait()
        committed.extend(ops)
        return list(ops)
    gc = GroupCommitter(apply, max_batch=2, max_delay=0.0)
    in_flight = [asyncio.create_task(gc.submit(i)) for i in range(2)]
    await entered.wait()  # 0 and 1 are being committed
    waiting = [asyncio.create_task(gc.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert gc.uncommitted() == [0, 1, 2, 3, 4]
    drain = asyncio.create_task(gc.drain())
    with pytest.raises(asyncio.TimeoutError):  # the batch in flight holds it
        await asyncio.wait_for(asyncio.shield(drain), 0.05)
    with pytest.raises(RunnerHostError) as refused:
        await gc.submit("late")
    assert refused.value.retryable and gc.draining
    release.set()
    await asyncio.wait_for(drain, 5)
    assert committed == [0, 1, 2, 3, 4] and gc.uncommitted() == []
    assert await asyncio.gather(*in_flight, *waiting) == [0, 1, 2, 3, 4]
    await gc.close()


async def test_group_commit_drain_flushes_what_waits_for_its_delay_at_once():
    committed: list[str] = []

    async def apply(ops):
        committed.extend(ops)
        return list(ops)
    gc = GroupCommitter(apply, max_batch=100, max_delay=3600.0)  # would wait an hour for company
    op = asyncio.create_task(gc.submit("a"))
    await asyncio.sleep(0)
    assert gc.uncommitted() == ["a"]
    await asyncio.wait_for(gc.drain(), 5)
    assert committed == ["a"] and await op == "a"
    await gc.close()


async def test_group_commit_drain_of_an_idle_committer_returns_at_once_and_a_failed_op_still_ends_it():
    async def apply(ops):
        raise ValueError("constraint")
    gc = GroupCommitter(apply, max_batch=10, max_delay=3600.0)
    await asyncio.wait_for(gc.drain(), 1)  # nothing to wait for
    gc2 = GroupCommitter(apply, max_batch=10, max_delay=3600.0)
    failing = asyncio.create_task(gc2.submit("bad"))
    await asyncio.sleep(0)
    await asyncio.wait_for(gc2.drain(), 5)
    with pytest.raises(ValueError):
        await failing
    await gc.close()
    await gc2.close()
