"""Runner output cannot be refused with a 400: text a database column cannot hold (NUL, lone
surrogates) is replaced by U+FFFD where results enter the host, so the stream the client saw and
the facts on record agree — and the run's facts commit on both backends."""
from __future__ import annotations

import uuid

from actors.core.run import RunBook
from actors.core.storage_service import StorageService
from protocol.events import EventEnvelope
from protocol.read_scope import ReadScope
from protocol.results import RunResult
from store import RunLedgerStore, TranscriptStore


async def test_unstorable_runner_text_is_replaced_and_recorded(db):
    run_id, conv = f"run_{uuid.uuid4().hex}", f"conv-{uuid.uuid4().hex[:8]}"
    event = EventEnvelope(event_type="message.received", conversation_id=conv, input={"text": "hi"})
    service = StorageService()
    async with db.transaction() as session:
        await service.write(session, "run_accept", dict(
            run_id=run_id, event=event.model_dump(mode="json"), agent_id="a", binding_id="a@1",
            runner_id="plugin:t/r/default", deadline_at=None, scope_keys={}, status="running"))

    book = RunBook(run_id, "plugin:t/r/default")
    book.host_frame("run.started", {})
    _, delta = book.accept(RunResult.delta(run_id, "nul\x00 and \ud800 here").model_dump())
    _, tool = book.accept({"type": "tool.call.completed", "data": {
        "tool_call_id": "t1", "tool_name": "x", "result": {"out\x00": "\x00"}}})
    book.accept(RunResult.failed(run_id, "runner.error", "RuntimeError: bad \x00 byte").model_dump())
    status, terminal = book.finish()
    assert delta["data"]["chunk"]["content"] == "nul\ufffd and \ufffd here"
    assert tool["data"]["result"] == {"out\ufffd": "\ufffd"}
    assert terminal["data"]["error"] == "RuntimeError: bad \ufffd byte"

    async with db.transaction() as session:
        await service.write(session, "finish_run", dict(
            run_id=run_id, status=status.value, reason=terminal["data"]["code"], frames=book.take_unflushed(),
            assistant={"transcript_id": f"tr_{run_id}_assistant", "text": book.assistant_message(),
                       "event_id": event.event_id, "conversation_id": conv, "partial": True},
            dropped=[]))
    async with db.transaction() as session:
        events = await RunLedgerStore(session).events_page(run_id, limit=100)
        run = await RunLedgerStore(session).get(run_id, scope=ReadScope.host())
        items = (await TranscriptStore(session).page(conv)).items
    assert run.status == "failed"
    assert [e.type for e in events.items] == ["run.started", "message.delta", "tool.call.completed", "run.failed"]
    assert events.items[1].data["chunk"]["content"] == "nul\ufffd and \ufffd here"
    assert [i.content for i in items] == ["hi", "nul\ufffd and \ufffd here"]
