"""EventLog: idempotent appends (single and bulk), paging, metadata patches, cleanup."""
from __future__ import annotations

from dataclasses import replace

import pytest

from protocol.cursor import encode_cursor
from protocol.errors import ErrorCode
from protocol.events import EventEnvelope
from protocol.read_scope import ReadScope
from store.event_log import EventLogEntry, EventLogStore

HOST = ReadScope.host()


def _envelope(conv: str, text: str = "hi", **extra) -> EventEnvelope:
    return EventEnvelope(event_type="message.received", source="platform", conversation_id=conv,
                         bot_id="bot", input={"text": text}, actor={"actor_id": "u1"}, **extra)


async def test_append_from_envelope_is_idempotent(db, uid):
    conv = uid("conv")
    env = _envelope(conv, "x" * 5000, raw_ref={"ref_id": "raw-1"})
    entry = EventLogEntry.from_envelope(env, binding_id="agent@1", run_id="run-1",
                                        runner_id="plugin:builtin/echo/echo")
    async with db.transaction() as s:
        log = EventLogStore(s)
        first = await log.append(entry)
        again = await log.append(entry)
        assert again == first
        assert await log.count(conv) == 1
        assert first.event_id == env.event_id and first.actor_id == "u1"
        assert first.raw_ref == "raw-1" and first.event_time == env.event_time
        assert len(first.input_summary) <= 1000 and first.input_summary.endswith("chars]")
        assert (await log.get(env.event_id, scope=HOST)) == first


async def test_append_many_counts_only_new_rows(db, uid):
    conv = uid("conv")
    entries = [EventLogEntry.from_envelope(_envelope(conv, f"m{i}")) for i in range(30)]
    async with db.transaction() as s:
        log = EventLogStore(s)
        assert await log.append_many(entries[:10]) == 10
        assert await log.append_many(entries + entries[:3]) == 20
        assert await log.append_many([]) == 0
        assert await log.count(conv) == 30


async def test_pages_backward_and_forward(db, uid):
    conv = uid("conv")
    entries = [EventLogEntry.from_envelope(_envelope(conv, f"m{i}")) for i in range(12)]
    entries.append(EventLogEntry.system("steering.injected", conversation_id=conv, run_id="r1",
                                        data={"source_event_id": entries[0].event_id}))
    async with db.transaction() as s:
        await EventLogStore(s).append_many(entries)
    ids = [e.event_id for e in entries]
    async with db.transaction() as s:
        log = EventLogStore(s)
        seen, cursor = [], None
        while True:  # backward: newest first
            page = await log.page(ReadScope.of_conversation(conv), before_cursor=cursor, limit=5)
            seen += [e.event_id for e in page.items]
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert seen == ids[::-1]
        first = await log.page(ReadScope.of_conversation(conv), limit=5)
        oldest = await log.get(ids[0], scope=HOST)
        forward = await log.page(ReadScope.of_conversation(conv), after_cursor=oldest.cursor, limit=5)  # oldest first
        assert [e.event_id for e in forward.items] == ids[1:6]
        back = await log.page(ReadScope.of_conversation(conv), before_cursor=forward.prev_cursor, limit=5)
        assert [e.event_id for e in back.items] == ids[:1]
        system = await log.page(ReadScope.of_conversation(conv), event_types=["steering.injected"])
        assert [(e.event_type, e.source) for e in system.items] == [("steering.injected", "system")]
        latest = await log.latest_cursor(conv)
        assert latest == first.items[0].cursor
        assert await log.has_before(conv, latest)
        assert not await log.has_before(conv, back.items[0].cursor)
        assert await log.latest_cursor(uid("empty")) is None


@pytest.mark.parametrize("cursor", ["%%%", encode_cursor("transcript", seq=1),
                                    encode_cursor("event_log", id=True)])
async def test_bad_cursor_is_invalid_argument(db, fails_with, cursor):
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await EventLogStore(s).page(HOST, before_cursor=cursor)


async def test_get_unknown_is_not_found(db, fails_with):
    async with db.transaction() as s:
        with fails_with(ErrorCode.NOT_FOUND):
            await EventLogStore(s).get("evt_missing", scope=HOST)


async def test_update_metadata_deep_merges_steering(db, uid):
    entry = EventLogEntry.from_envelope(_envelope(uid("conv")), metadata={
        "steering": {"status": "queued", "claimed_by_run_id": "r1"}, "other": 1})
    async with db.transaction() as s:
        log = EventLogStore(s)
        await log.append(entry)
        record = await log.update_metadata(entry.event_id, {"steering": {"status": "injected"}})
    assert record.metadata == {"steering": {"status": "injected", "claimed_by_run_id": "r1"}, "other": 1}


async def test_cleanup_older_than(db, uid):
    conv = uid("conv")
    old = replace(EventLogEntry.from_envelope(_envelope(conv)), created_at=10.0)
    async with db.transaction() as s:
        log = EventLogStore(s)
        await log.append_many([old, EventLogEntry.from_envelope(_envelope(conv))])
        assert await log.cleanup_older_than(60) >= 1
        assert await log.count(conv) == 1


async def test_bulk_append_across_insert_batches(db, uid):
    conv = uid("conv")
    entries = [EventLogEntry.system("run.rolled_back", conversation_id=conv, event_id=uid("evt"))
               for _ in range(2500)]
    async with db.transaction() as s:
        log = EventLogStore(s)
        assert await log.append_many(entries[:1200]) == 1200
        assert await log.append_many(entries) == 1300
        assert await log.count(conv, "run.rolled_back") == 2500
