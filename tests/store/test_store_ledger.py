"""Run ledger: idempotent create/append, status machine, paging, cancel, recovery."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from protocol.cursor import encode_cursor
from protocol.errors import ErrorCode
from protocol.pages import RunEventRecord
from protocol.read_scope import ReadScope
from store.ledger import RunLedgerStore
from store.models import AgentRunEvent

HOST = ReadScope.host()


async def _run(db, uid, **fields) -> str:
    run_id = uid("run")
    async with db.transaction() as s:
        await RunLedgerStore(s).create(run_id, **fields)
    return run_id


async def test_create_is_idempotent(db, uid):
    run_id = uid("run")
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        first = await ledger.create(run_id, conversation_id="c", agent_id="a", metadata={"k": 1},
                                    deadline_at=2e9)
        again = await ledger.create(run_id, conversation_id="other")
    assert again == first
    assert first.status == "created" and first.deadline_at == 2_000_000_000
    assert first.metadata == {"k": 1}


async def test_legal_transitions_stamp_times(db, uid):
    run_id = await _run(db, uid)
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        running = await ledger.transition(run_id, "running")
        assert running.status == "running" and running.started_at is not None
        done = await ledger.transition(run_id, "completed", "ok")
        assert done.finished_at is not None and done.status_reason == "ok"
        assert (await ledger.transition(run_id, "completed")).status == "completed"  # retry: no-op


@pytest.mark.parametrize("path, illegal", [
    ([], "completed"),
    ([], "timeout"),
    (["running", "completed"], "running"),
    (["cancelled"], "failed"),
    (["running", "timeout"], "created"),
])
async def test_illegal_transition_is_invalid_argument(db, uid, fails_with, path, illegal):
    run_id = await _run(db, uid)
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        for status in path:
            await ledger.transition(run_id, status)
        current = (await ledger.get(run_id, scope=HOST)).status
        with fails_with(ErrorCode.INVALID_ARGUMENT) as info:
            await ledger.transition(run_id, illegal)
    assert info.value.details["from"] == current and info.value.details["to"] == illegal


async def test_unknown_run_and_status(db, fails_with):
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        with fails_with(ErrorCode.NOT_FOUND):
            await ledger.get("run-missing", scope=HOST)
        with fails_with(ErrorCode.NOT_FOUND):
            await ledger.transition("run-missing", "running")
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await ledger.transition("run-missing", "paused")
        with fails_with(ErrorCode.NOT_FOUND):
            await ledger.append_event("run-missing", 0, "message.delta", {})


async def test_append_event_with_used_sequence_adds_no_row(db, uid):
    run_id = await _run(db, uid)
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        assert await ledger.append_event(run_id, 1, "message.delta", {"chunk": {"content": "a"}})
        assert not await ledger.append_event(run_id, 1, "message.delta", {"chunk": {"content": "b"}})
        batch = [RunEventRecord(run_id=run_id, sequence=n, type="message.delta", data={"n": n})
                 for n in range(0, 6)]
        assert await ledger.append_events(batch + batch) == 5
        rows = (await s.execute(select(func.count()).select_from(AgentRunEvent)
                                .where(AgentRunEvent.run_id == run_id))).scalar_one()
        assert rows == 6
        page = await ledger.events_page(run_id, limit=4)
        assert [e.sequence for e in page.items] == [0, 1, 2, 3] and page.has_more
        assert page.items[1].data == {"chunk": {"content": "a"}}
        rest = await ledger.events_page(run_id, after_cursor=page.next_cursor, limit=4)
        assert [e.sequence for e in rest.items] == [4, 5] and not rest.has_more


async def test_append_event_rejects_non_json_data(db, uid, fails_with):
    run_id = await _run(db, uid)
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await RunLedgerStore(s).append_event(run_id, 0, "x", {"bad": {1, 2}})


async def test_events_cursor_is_bound_to_its_run(db, uid, fails_with):
    run_a, run_b = await _run(db, uid), await _run(db, uid)
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        await ledger.append_events([RunEventRecord(run_id=run_a, sequence=n, type="t") for n in range(3)])
        cursor = (await ledger.events_page(run_a, limit=1)).next_cursor
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await ledger.events_page(run_b, after_cursor=cursor)
        for bad in (cursor, "not a cursor", encode_cursor("run_list", t=1.5, r=7)):
            with fails_with(ErrorCode.INVALID_ARGUMENT):
                await ledger.list(HOST, before_cursor=bad)


async def test_list_pages_both_ways_with_filters(db, uid):
    conv = uid("conv")
    runs = [await _run(db, uid, conversation_id=conv) for _ in range(7)]
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        await ledger.transition(runs[0], "running")
        seen, cursor = [], None
        while True:  # backward: newest first
            page = await ledger.list(ReadScope.of_conversation(conv), before_cursor=cursor, limit=3)
            assert page.total_count == 7
            seen += [r.run_id for r in page.items]
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(runs)
        newest = await ledger.list(ReadScope.of_conversation(conv), limit=3)
        older = await ledger.list(ReadScope.of_conversation(conv), before_cursor=newest.next_cursor, limit=3)
        assert [r.run_id for r in older.items] == seen[3:6]
        forward = await ledger.list(ReadScope.of_conversation(conv), after_cursor=older.prev_cursor, limit=3)  # oldest first
        assert [r.run_id for r in forward.items] == seen[2::-1] and not forward.has_more
        back = await ledger.list(ReadScope.of_conversation(conv), before_cursor=forward.prev_cursor)
        assert [r.run_id for r in back.items] == seen[3:]
        running = await ledger.list(ReadScope.of_conversation(conv), statuses=["running"])
        assert [r.run_id for r in running.items] == [runs[0]] and running.total_count == 1


async def test_request_cancel_and_non_terminal(db, uid):
    running, done, fresh = await _run(db, uid), await _run(db, uid), await _run(db, uid)
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        await ledger.transition(running, "running")
        await ledger.transition(done, "failed", "boom")
        first = await ledger.request_cancel(running, "user")
        assert first.cancel_requested_at is not None and first.status == "running"
        assert (await ledger.request_cancel(running)).cancel_requested_at == first.cancel_requested_at
        assert (await ledger.request_cancel(done)).cancel_requested_at is None
        open_runs = {r.run_id for r in await ledger.list_non_terminal()}
    assert {running, fresh} <= open_runs and done not in open_runs


async def test_start_records_a_running_run_in_one_step_and_is_idempotent(db, uid):
    fresh = uid("run")
    async with db.transaction() as s:
        ledger = RunLedgerStore(s)
        started = await ledger.start(fresh, conversation_id="c", agent_id="a", deadline_at=2e9)
        assert started.status == "running" and started.started_at is not None
        assert started.conversation_id == "c" and started.deadline_at == 2_000_000_000
        assert await ledger.start(fresh, conversation_id="other") == started  # a retry changes nothing
    queued = await _run(db, uid, conversation_id="q")
    async with db.transaction() as s:
        moved = await RunLedgerStore(s).start(queued, conversation_id="ignored")
    assert moved.status == "running" and moved.conversation_id == "q" and moved.started_at is not None


async def test_start_of_a_finished_run_is_an_illegal_transition(db, uid, fails_with):
    run_id = await _run(db, uid)
    async with db.transaction() as s:
        await RunLedgerStore(s).transition(run_id, "cancelled", "withdrawn")
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT) as info:
            await RunLedgerStore(s).start(run_id)
    assert info.value.details["from"] == "cancelled" and info.value.details["to"] == "running"


async def test_append_rows_of_many_runs_skips_used_sequences_and_rejects_unknown_runs(db, uid, fails_with):
    run_a, run_b = await _run(db, uid), await _run(db, uid)
    rows = [(run_a, 0, "message.delta", {"chunk": {"content": "a"}}), (run_b, 0, "run.started", {}),
            (run_a, 1, "run.completed", {"finish_reason": "stop"}), (run_a, 0, "message.delta", {"dup": True})]
    async with db.transaction() as s:
        assert await RunLedgerStore(s).append_rows(rows) == 3
    async with db.transaction() as s:
        assert await RunLedgerStore(s).append_rows(rows[:2]) == 0  # a retried batch adds nothing
        page = await RunLedgerStore(s).events_page(run_a)
    assert [(e.sequence, e.type, e.data) for e in page.items] == [
        (0, "message.delta", {"chunk": {"content": "a"}}), (1, "run.completed", {"finish_reason": "stop"})]
    with fails_with(ErrorCode.NOT_FOUND) as info:
        async with db.transaction() as s:
            await RunLedgerStore(s).append_rows([(run_b, 1, "x", {}), ("run-missing-" + run_a, 0, "x", {})])
    assert info.value.details["run_ids"] == ["run-missing-" + run_a]
    async with db.transaction() as s:  # the failed batch wrote nothing, not even run_b's known row
        assert [e.sequence for e in (await RunLedgerStore(s).events_page(run_b)).items] == [0]
