"""Transcript: gap-free seq under concurrency, idempotency, paging, cap, search, revert."""
from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from protocol.cursor import encode_cursor
from protocol.errors import ErrorCode
from store.transcript import TranscriptEntry, TranscriptStore


async def _fill(db, conversation: str, n: int, **extra) -> None:
    async with db.transaction() as s:
        await TranscriptStore(s).append_many([
            TranscriptEntry(event_id=f"e{i}", conversation_id=conversation, role="user",
                            content=f"message {i}", **extra) for i in range(1, n + 1)])


async def test_200_concurrent_appends_get_gap_free_seqs(db, uid):
    conversations = [uid("conv") for _ in range(5)]

    async def append(i: int) -> tuple[str, int]:
        conv = conversations[i % 5]
        async with db.transaction() as s:
            item = await TranscriptStore(s).append(event_id=f"e{i}", conversation_id=conv,
                                                   role="user", content=f"hello {i}")
        return conv, item.seq

    results = await asyncio.gather(*(append(i) for i in range(200)))
    seqs: dict[str, list[int]] = defaultdict(list)
    for conv, seq in results:
        seqs[conv].append(seq)
    async with db.transaction() as s:
        store = TranscriptStore(s)
        for conv in conversations:
            assert sorted(seqs[conv]) == list(range(1, 41))
            page = await store.page(conv, limit=100)
            assert [i.seq for i in page.items] == list(range(1, 41))
            assert await store.latest(conv) == (40, page.items[-1].cursor)


async def test_concurrent_batches_over_shared_conversations_neither_deadlock_nor_leave_gaps(db, uid):
    """Each batch bumps the counters of several conversations at once (one statement); batches
    listing the same conversations in opposite orders must not lock them in opposite orders."""
    conversations = [uid("conv") for _ in range(4)]

    async def batch(i: int) -> list:
        order = conversations if i % 2 else conversations[::-1]
        async with db.transaction() as s:
            return await TranscriptStore(s).append_many([
                TranscriptEntry(event_id=f"b{i}-{j}", conversation_id=conv, role="user", content=f"m{i}")
                for j, conv in enumerate(order * 2)])

    batches = await asyncio.wait_for(asyncio.gather(*(batch(i) for i in range(30))), 60)
    seqs: dict[str, list[int]] = defaultdict(list)
    for items in batches:
        assert len(items) == 8
        for item in items:
            seqs[item.conversation_id].append(item.seq)
    for conv in conversations:
        assert sorted(seqs[conv]) == list(range(1, 61))  # 30 batches × 2 items, gap-free


async def test_append_is_idempotent_on_transcript_id_and_consumes_no_seq(db, uid):
    conv = uid("conv")
    entry = TranscriptEntry(event_id="e1", conversation_id=conv, role="user", content="hi",
                            transcript_id=uid("tr"))
    async with db.transaction() as s:
        first = await TranscriptStore(s).append_many([entry, entry])
    async with db.transaction() as s:
        store = TranscriptStore(s)
        again = await store.append_many([entry, TranscriptEntry(event_id="e2", conversation_id=conv,
                                                                role="assistant", content="yo")])
        assert [i.seq for i in first] == [1]
        assert again[0] == first[0]
        assert again[1].seq == 2  # the retried id did not burn a number
        assert [i.seq for i in (await store.page(conv)).items] == [1, 2]


async def test_rolled_back_append_releases_its_seqs(db, uid):
    conv = uid("conv")
    with pytest.raises(RuntimeError):
        async with db.transaction() as s:
            await TranscriptStore(s).append(event_id="e", conversation_id=conv, role="user")
            raise RuntimeError("abort")
    async with db.transaction() as s:
        item = await TranscriptStore(s).append(event_id="e", conversation_id=conv, role="user")
    assert item.seq == 1


async def test_pages_round_trip_backward_and_forward(db, uid):
    conv = uid("conv")
    await _fill(db, conv, 25)
    async with db.transaction() as s:
        store = TranscriptStore(s)
        # backward from the newest
        seen, cursor = [], None
        while True:
            page = await store.page(conv, before_cursor=cursor, limit=10)
            assert [i.seq for i in page.items] == sorted(i.seq for i in page.items)
            seen = [i.seq for i in page.items] + seen
            if not page.has_more:
                assert page.next_cursor is None
                break
            cursor = page.next_cursor
        assert seen == list(range(1, 26))
        # forward from the oldest
        seen, page = [], await store.page(conv, direction="forward", limit=10)
        seen += [i.seq for i in page.items]
        while page.has_more:
            page = await store.page(conv, after_cursor=page.next_cursor, limit=10)
            seen += [i.seq for i in page.items]
        assert seen == list(range(1, 26))
        # prev_cursor turns around; a window between two cursors
        newest = await store.page(conv, limit=5)
        assert [i.seq for i in newest.items] == [21, 22, 23, 24, 25]
        older = await store.page(conv, before_cursor=newest.next_cursor, limit=5)
        assert [i.seq for i in older.items] == [16, 17, 18, 19, 20]
        assert [i.seq for i in (await store.page(conv, after_cursor=older.prev_cursor)).items] \
            == [21, 22, 23, 24, 25]
        assert [i.seq for i in (await store.page(conv, after_cursor=older.items[0].cursor,
                                                 before_cursor=newest.items[1].cursor)).items] \
            == [17, 18, 19, 20, 21]
        assert await store.has_before(conv, older.items[0].cursor)
        assert not await store.has_before(conv, (await store.page(conv, direction="forward",
                                                                  limit=1)).items[0].cursor)


@pytest.mark.parametrize("cursor", [
    "garbage!", "", "x" * 600, encode_cursor("event_log", id=3), encode_cursor("transcript", seq=-1),
    encode_cursor("transcript", seq="3"),
])
async def test_malformed_or_foreign_cursor_is_invalid_argument(db, uid, fails_with, cursor):
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await TranscriptStore(s).page(uid("conv"), before_cursor=cursor)


async def test_cursor_of_another_conversation_is_invalid_argument(db, uid, fails_with):
    conv, other = uid("conv"), uid("conv")
    await _fill(db, conv, 2)
    async with db.transaction() as s:
        store = TranscriptStore(s)
        cursor = (await store.page(conv)).items[0].cursor
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.page(other, after_cursor=cursor)


async def test_content_cap_marks_truncation(db, uid):
    async with db.transaction() as s:
        item = await TranscriptStore(s, cap=1000).append(
            event_id="e", conversation_id=uid("conv"), role="assistant", content="é" * 5000)
    assert len(item.content) <= 1000
    assert item.content.endswith(f"…[truncated {5000 - 968} chars]")
    assert item.metadata["truncated"] == {"original_length": 5000, "cap": 1000}


async def test_revert_run_hides_items(db, uid):
    conv, run = uid("conv"), uid("run")
    async with db.transaction() as s:
        store = TranscriptStore(s)
        await store.append(event_id="e1", conversation_id=conv, role="user", content="keep apples")
        await store.append(event_id="e2", conversation_id=conv, role="assistant", run_id=run,
                           content="drop apples")
        await store.append(event_id="e3", conversation_id=conv, role="assistant", run_id=run,
                           content="drop more")
    async with db.transaction() as s:
        store = TranscriptStore(s)
        assert await store.revert_run(run) == 2
        assert await store.revert_run(run) == 0
        assert [i.content for i in (await store.page(conv)).items] == ["keep apples"]
        assert [i.content for i in (await store.search(conv, "apples")).items] == ["keep apples"]
        assert (await store.latest(conv))[0] == 1
        nxt = await store.append(event_id="e4", conversation_id=conv, role="user")
        assert nxt.seq == 4  # numbers are never reused


async def test_search_ranks_and_filters(db, uid, fails_with):
    conv = uid("conv")
    async with db.transaction() as s:
        store = TranscriptStore(s)
        await store.append(event_id="e1", conversation_id=conv, role="user",
                           content="The quick brown fox")
        await store.append(event_id="e2", conversation_id=conv, role="assistant",
                           content="A lazy dog sleeps")
        await store.append(event_id="e3", conversation_id=conv, role="user",
                           content="quick dog, quick fox!")
        await store.append(event_id="e4", conversation_id=uid("conv"), role="user",
                           content="quick fox elsewhere")
        result = await store.search(conv, "Quick FOX")
        assert [i.event_id for i in result.items] == ["e3", "e1"]
        assert result.total_count == 2 and result.query == "Quick FOX"
        assert [i.event_id for i in (await store.search(conv, "dog", filters={"role": "assistant"})).items] \
            == ["e2"]
        assert (await store.search(conv, "dog fox", top_k=1)).items[0].event_id == "e3"
        assert (await store.search(conv, "100%_")).items == []  # LIKE wildcards are literal
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.search(conv, "  ?! ")
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await store.search(conv, "dog", filters={"secret": "x"})


async def test_cleanup_older_than(db, uid):
    conv = uid("conv")
    async with db.transaction() as s:
        await TranscriptStore(s).append_many([
            TranscriptEntry(event_id="old", conversation_id=conv, role="user", created_at=1.0),
            TranscriptEntry(event_id="new", conversation_id=conv, role="user")])
    async with db.transaction() as s:
        store = TranscriptStore(s)
        assert await store.cleanup_older_than(3600) >= 1
        assert [i.event_id for i in (await store.page(conv)).items] == ["new"]


async def test_bulk_append_across_insert_batches(db, uid):
    conv_a, conv_b = uid("conv"), uid("conv")
    entries = [TranscriptEntry(event_id=f"e{i}", conversation_id=(conv_a, conv_b)[i % 2], role="user",
                               content=f"m{i}", transcript_id=f"{conv_a}-{i}") for i in range(2500)]
    async with db.transaction() as s:
        items = await TranscriptStore(s).append_many(entries[:1500])
    async with db.transaction() as s:
        items += (await TranscriptStore(s).append_many(entries))[1500:]
    assert len(items) == 2500
    for conv in (conv_a, conv_b):
        assert sorted(i.seq for i in items if i.conversation_id == conv) == list(range(1, 1251))
