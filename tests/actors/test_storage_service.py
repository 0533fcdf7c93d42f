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
