"""The retention job (actors/core/retention.py) against real Postgres and SQLite, through the
storage write op the host runs periodically: expired artifacts and their files, stale harness
sessions and their workspaces, old cleaned session rows, and EventLog/Transcript by age."""
from __future__ import annotations

import os
import tempfile
import time
import uuid

import pytest
from sqlalchemy import select, update

from actors.core.retention import RetentionPolicy, run_retention
from actors.core.storage_service import StorageService
from protocol.events import EventEnvelope
from protocol.read_scope import ReadScope
from protocol.sessions import SessionKey
from store import (ArtifactStore, ConversationOwner, EventLogEntry, EventLogStore, RuntimeSessionStore,
                   TranscriptEntry, TranscriptStore)
from store.models import AgentRuntimeSession, EventLog, Transcript

DAY = 86_400.0
HARNESS = "plugin:builtin/harness/default"


@pytest.fixture
def workspace_root(tmp_path, monkeypatch):
    """The harness default root, moved under tmp (the job also sweeps it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = tmp_path / "runnerhost-harness"
    root.mkdir()
    return root


def service(root) -> StorageService:
    return StorageService(lambda session: ArtifactStore(session, root / "artifacts", inline_limit=16))


async def write(db, svc: StorageService, kind: str, **kwargs):
    async with db.transaction() as session:
        return await svc.write(session, kind, kwargs)


async def age(db, table, column, where, seconds: float) -> None:
    async with db.transaction() as session:
        await session.execute(update(table).where(where).values({column: time.time() - seconds}))


def workspace(root, owner: ConversationOwner | None = None, *, digest: str | None = None, old: bool = False):
    digest = digest or SessionKey(owner.runner_id, owner.binding_id, owner.conversation_id, owner.thread_id).digest()
    path = root / digest
    path.mkdir()
    (path / "notes.md").write_text("work in progress")
    if old:
        stamp = time.time() - 10 * DAY
        os.utime(path, (stamp, stamp))
    return path


async def test_a_round_removes_what_expired_and_keeps_the_rest(db, workspace_root):
    svc, tag = service(workspace_root), uuid.uuid4().hex[:8]
    # artifacts: one expired (a file), one live
    async with db.transaction() as session:
        store = ArtifactStore(session, workspace_root / "artifacts", inline_limit=16)
        gone = await store.register_bytes(b"x" * 64, artifact_type="file", expires_at=time.time() - 5)
        kept = await store.register_bytes(b"y" * 64, artifact_type="file", expires_at=time.time() + 3600)
    gone_files = list((workspace_root / "artifacts").rglob(f"{gone.artifact_id}.*"))
    assert gone_files
    # harness sessions: idle for 8 days, fresh, and cleaned 31 days ago
    idle, fresh, cleaned = (ConversationOwner(HARNESS, "agent", f"conv-{tag}-{n}") for n in ("idle", "fresh", "old"))
    async with db.transaction() as session:
        sessions = RuntimeSessionStore(session)
        for owner in (idle, fresh, cleaned):
            await sessions.upsert_active(owner, external_session_id=f"ext-{owner.conversation_id}")
        await sessions.mark_cleaned(cleaned)
    await age(db, AgentRuntimeSession, "updated_at", AgentRuntimeSession.conversation_id == idle.conversation_id, 8 * DAY)
    await age(db, AgentRuntimeSession, "cleaned_at", AgentRuntimeSession.conversation_id == cleaned.conversation_id,
              31 * DAY)
    idle_dir, fresh_dir = workspace(workspace_root, idle), workspace(workspace_root, fresh, old=True)
    orphan_old = workspace(workspace_root, digest=SessionKey(HARNESS, "agent", f"run:{tag}").digest(), old=True)
    orphan_new = workspace(workspace_root, digest=SessionKey(HARNESS, "agent", f"run:{tag}-new").digest())

    report = await write(db, svc, "retention", policy=RetentionPolicy().model_dump())

    assert report["artifacts"] >= 1 and not any(p.exists() for p in gone_files)
    async with db.transaction() as session:
        store = ArtifactStore(session, workspace_root / "artifacts", inline_limit=16)
        assert (await store.metadata(kept.artifact_id, scope=ReadScope.host())).artifact_id == kept.artifact_id
        rows = {r.conversation_id: r.status for r in (await session.execute(
            select(AgentRuntimeSession).where(AgentRuntimeSession.conversation_id.like(f"conv-{tag}-%")))).scalars()}
    assert rows == {idle.conversation_id: "cleaned", fresh.conversation_id: "active"}  # the old cleaned row is gone
    assert report["sessions_retired"] == 1 and report["sessions_deleted"] >= 1
    assert not idle_dir.exists() and not orphan_old.exists()
    assert fresh_dir.exists() and orphan_new.exists()  # an active session's workspace stays, however old
    assert str(workspace_root) in report["roots"]


async def test_event_log_and_transcript_by_age_only_where_configured_and_bounded(db, workspace_root):
    svc, conv = service(workspace_root), f"conv-{uuid.uuid4().hex[:8]}"
    events = [EventEnvelope(event_type="message.received", conversation_id=conv, input={"text": f"m{i}"})
              for i in range(3)]
    async with db.transaction() as session:
        await EventLogStore(session).append_many([EventLogEntry.from_envelope(e) for e in events])
        await TranscriptStore(session).append_many([
            TranscriptEntry(event_id=e.event_id, conversation_id=conv, role="user", content=e.input.text)
            for e in events])
    old_ids = [e.event_id for e in events[:2]]
    await age(db, EventLog, "created_at", EventLog.event_id.in_(old_ids), 40 * DAY)
    await age(db, Transcript, "created_at", Transcript.event_id.in_(old_ids), 40 * DAY)

    async def remaining():
        async with db.transaction() as session:
            page = await EventLogStore(session).page(ReadScope.of_conversation(conv), limit=10)
            items = (await TranscriptStore(session).page(conv)).items
        return [e.event_id for e in page.items], [i.content for i in items]

    await write(db, svc, "retention", policy=RetentionPolicy().model_dump())  # off by default
    assert len((await remaining())[0]) == 3 and len((await remaining())[1]) == 3

    by_age = RetentionPolicy(event_log_max_age_s=30 * DAY, transcript_max_age_s=30 * DAY, batch_limit=1)
    first = await write(db, svc, "retention", policy=by_age.model_dump())
    assert (first["events"], first["transcript_items"], first["more"]) == (1, 1, True)

    async def storage_write(kind, **kwargs):
        return await write(db, svc, kind, **kwargs)
    total = await run_retention(storage_write, by_age)  # rounds until nothing is left over
    assert total["more"] is False and total["events"] >= 1
    event_ids, contents = await remaining()
    assert event_ids == [events[2].event_id] and contents == ["m2"]
