"""StorageService without Ray: a group-commit batch coalesces run events and stays idempotent."""
from __future__ import annotations

import uuid

from actors.core.storage_service import StorageService
from protocol.events import EventEnvelope


def accept(run_id: str) -> tuple[str, dict]:
    event = EventEnvelope(event_type="message.received", conversation_id=f"c-{run_id}",
                          input={"text": "hi"}).model_dump(mode="json")
    return ("run_accept", dict(run_id=run_id, event=event, agent_id="a", binding_id="a@1", runner_id="plugin:x/y/z",
                               deadline_at=None, scope_keys={}))


def frames(n: int, start: int = 0) -> list[dict]:
    return [{"type": "message.delta", "data": {"chunk": {"role": "assistant", "content": str(i)}}, "sequence": i}
            for i in range(start, start + n)]


async def test_batch_coalesces_run_events_and_retries_duplicate_nothing(db):
    service = StorageService()
    runs = [f"run_{uuid.uuid4().hex}" for _ in range(3)]
    ops = [accept(r) for r in runs] + [("run_events", {"run_id": r, "frames": frames(4)}) for r in runs]
    async with db.transaction() as session:
        await service.write_batch(session, ops)
    async with db.transaction() as session:  # a retried batch (actor restart) adds nothing
        await service.write_batch(session, ops)
    async with db.transaction() as session:
        for r in runs:
            page = await service.read(session, "run_events_page", {"run_id": r, "limit": 100})
            assert [e["sequence"] for e in page["items"]] == [0, 1, 2, 3]


def _accept(run_id: str, conv: str, event_id: str | None = None, status: str = "running") -> tuple[str, dict]:
    event = EventEnvelope(event_type="message.received", conversation_id=conv, input={"text": f"hi {run_id}"},
                          **({"event_id": event_id} if event_id else {}))
    return ("run_accept", dict(run_id=run_id, event=event, agent_id="a", binding_id="a@1",
                               runner_id="plugin:x/y/z", deadline_at=None, scope_keys={}, status=status,
                               frames=[{"run_id": run_id, "type": "run.started", "data": {}, "sequence": 0}]))


def _finish(run_id: str, conv: str, event_id: str) -> tuple[str, dict]:
    return ("finish_run", dict(run_id=run_id, status="completed", reason="stop", dropped=[],
                               frames=[{"run_id": run_id, "type": "run.completed", "data": {}, "sequence": 1}],
                               assistant={"transcript_id": f"tr_{run_id}_assistant", "text": "echo", "partial": False,
                                          "event_id": event_id, "conversation_id": conv}))


async def _facts(db, conversations: list[str]) -> list:
    service = StorageService()
    out = []
    async with db.transaction() as session:
        for conv in conversations:
            page = await service.read(session, "history_page", {"conversation_id": conv, "limit": 100,
                                                                "direction": "forward"})
            out.append([(i["role"], i["seq"]) for i in page["items"]])
    return out


async def test_a_batch_writes_what_the_same_ops_one_by_one_write(db):
    """The bulk path (one statement per table for the whole batch) against the single-op path."""
    service = StorageService()
    tag = uuid.uuid4().hex[:8]
    shared = [f"bulk-{tag}", f"single-{tag}"]  # two messages per conversation in one batch

    def ops(prefix: str, conv: str) -> tuple[list, list]:
        runs = [(f"run_{prefix}{n}_{tag}", f"evt_{prefix}{n}_{tag}") for n in range(3)]
        accepts = [_accept(r, conv, e) for r, e in runs[:2]] + [_accept(runs[2][0], conv + "-b", runs[2][1])]
        return accepts, [_finish(r, conv if n < 2 else conv + "-b", e) for n, (r, e) in enumerate(runs)]

    bulk_accepts, bulk_finishes = ops("b", shared[0])
    async with db.transaction() as session:
        accepted = await service.write_batch(session, bulk_accepts)
    async with db.transaction() as session:
        await service.write_batch(session, bulk_finishes)
    single_accepts, single_finishes = ops("s", shared[1])
    for kind, kwargs in single_accepts + single_finishes:
        async with db.transaction() as session:
            await service.write(session, kind, kwargs)
    assert [a["handles"]["transcript_seq"] for a in accepted] == [1, 2, 1]
    assert [a["handles"]["has_history_before"] for a in accepted] == [False, True, False]
    bulk = await _facts(db, [shared[0], shared[0] + "-b"])
    single = await _facts(db, [shared[1], shared[1] + "-b"])
    assert bulk == single == [[("user", 1), ("user", 2), ("assistant", 3), ("assistant", 4)],
                              [("user", 1), ("assistant", 2)]]
    async with db.transaction() as session:  # a retried batch writes nothing twice
        again = await service.write_batch(session, bulk_finishes)
    assert again == [{"status": "completed"}] * 3
    assert await _facts(db, [shared[0], shared[0] + "-b"]) == bulk


async def test_a_batch_with_the_same_event_twice_accepts_it_once(db):
    service = StorageService()
    tag = uuid.uuid4().hex[:8]
    conv, event_id = f"dup-{tag}", f"evt_dup_{tag}"
    first, second = _accept(f"run_a_{tag}", conv, event_id), _accept(f"run_b_{tag}", conv, event_id)
    async with db.transaction() as session:
        results = await service.write_batch(session, [first, second])
    assert "handles" in results[0]
    assert results[1] == {"duplicate": {"run_id": f"run_a_{tag}", "same_body": False}}
    async with db.transaction() as session:  # a retry of the first write returns what it did
        retried = await service.write_batch(session, [first])
    assert retried[0]["event_seq"] is None and retried[0]["handles"]["transcript_seq"] == 1
    async with db.transaction() as session:
        runs = await service.read(session, "run_list_filtered", {"conversation_id": conv, "limit": 10})
    assert [r["run_id"] for r in runs["items"]] == [f"run_a_{tag}"]


def _start(run_id: str, event_seq: int | None, deadline_at: float = 4_000_000_000.0) -> tuple[str, dict]:
    return ("start_run", dict(run_id=run_id, deadline_at=deadline_at, scope_keys={}, event_seq=event_seq,
                              is_message=True,
                              frames=[{"run_id": run_id, "type": "run.started", "data": {}, "sequence": 1}]))


async def test_queued_runs_start_together_as_they_would_one_by_one(db):
    """The bulk start (one UPDATE for the batch) against the single-op path, with a run whose
    cancellation was requested while it waited and a retried batch among them."""
    service = StorageService()
    tag = uuid.uuid4().hex[:8]

    async def queue(prefix: str) -> list[tuple[str, dict]]:
        convs = [f"{prefix}-{tag}", f"{prefix}-{tag}", f"{prefix}-{tag}-b", f"{prefix}-{tag}-c"]
        accepts = [_accept(f"run_{prefix}{n}_{tag}", c, f"evt_{prefix}{n}_{tag}", status="created")
                   for n, c in enumerate(convs)]
        async with db.transaction() as session:
            accepted = await service.write_batch(session, accepts)
            await service.write(session, "request_cancel", {"run_id": f"run_{prefix}3_{tag}", "reason": "bye"})
        return [_start(op["run_id"], a["event_seq"]) for (_, op), a in zip(accepts, accepted)]

    bulk_starts, single_starts = await queue("bulk"), await queue("single")
    async with db.transaction() as session:
        bulk = await service.write_batch(session, bulk_starts)
    single = []
    for kind, kwargs in single_starts:
        async with db.transaction() as session:
            single.append(await service.write(session, kind, kwargs))

    def shape(results: list[dict]) -> list:
        return [r["cancelled"] if "cancelled" in r else
                {k: v for k, v in r["handles"].items() if k not in ("latest_cursor", "event_seq")} for r in results]
    assert shape(bulk) == shape(single) == [
        {"state": {}, "transcript_seq": 2, "has_history_before": True},
        {"state": {}, "transcript_seq": 2, "has_history_before": True},
        {"state": {}, "transcript_seq": 1, "has_history_before": False},
        {"sequence": 1}]
    async with db.transaction() as session:  # a retried batch (actor restart) returns the same, adds nothing
        again = await service.write_batch(session, bulk_starts)
        runs = [await service.read(session, "run_get", {"run_id": op["run_id"]}) for _, op in bulk_starts]
        frames = [await service.read(session, "run_events_page", {"run_id": op["run_id"], "limit": 10})
                  for _, op in bulk_starts]
    assert shape(again) == shape(bulk)
    assert [r["status"] for r in runs] == ["running", "running", "running", "cancelled"]
    assert [r["deadline_at"] for r in runs[:3]] == [4_000_000_000.0] * 3  # the clock starts at the start
    assert [[(e["sequence"], e["type"]) for e in page["items"]][1:] for page in frames] == [
        [(1, "run.started")]] * 3 + [[(1, "run.failed")]]  # once each (0 is the accept's frame)
