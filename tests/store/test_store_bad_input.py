"""Bad input is ``invalid_argument`` before any SQL runs: the same transaction stays
usable afterwards (on Postgres a failed statement would abort it), which is what
lets a storage actor group-commit many writes and reject only the bad one."""
from __future__ import annotations

import pytest

from protocol.errors import ErrorCode
from protocol.pages import RunEventRecord
from protocol.read_scope import ReadScope
from store import (
    ArtifactStore,
    ConversationOwner,
    EventLogEntry,
    EventLogStore,
    KnowledgeStore,
    KvStore,
    RunLedgerStore,
    RuntimeSessionStore,
    StateStore,
    TranscriptEntry,
    TranscriptStore,
)

NUL, SURROGATE, LONG = "a\x00b", "\ud800", "x" * 300
KEY = "0" * 64

BAD_CALLS = {
    "event id with NUL": lambda s, r: EventLogStore(s).get(NUL, scope=ReadScope.host()),
    "event json with NUL": lambda s, r: EventLogStore(s).append(
        EventLogEntry(event_id="bad-1", event_type="api.invoked", source="api", data={"t": NUL})),
    "event field too long": lambda s, r: EventLogStore(s).append_many(
        [EventLogEntry(event_id="bad-2", event_type="api.invoked", source="api", bot_id=LONG)]),
    "event summary surrogate": lambda s, r: EventLogStore(s).append(
        EventLogEntry(event_id="bad-3", event_type="api.invoked", source="api", input_summary=SURROGATE)),
    "event metadata patch": lambda s, r: EventLogStore(s).update_metadata("e", {"x": {1}}),
    "transcript content NUL": lambda s, r: TranscriptStore(s).append_many(
        [TranscriptEntry(event_id="e", conversation_id="c-bad", role="user", content=NUL)]),
    "transcript thread too long": lambda s, r: TranscriptStore(s).append(
        event_id="e", conversation_id="c-bad", role="user", thread_id=LONG),
    "transcript filter NUL": lambda s, r: TranscriptStore(s).search("c", "hi", filters={"role": NUL}),
    "state key NUL": lambda s, r: StateStore(s).get(KEY, NUL),
    "state value NUL": lambda s, r: StateStore(s).set(KEY, "k", [NUL], scope="runner", runner_id="r"),
    "state prefix NUL": lambda s, r: StateStore(s).list(KEY, prefix=NUL),
    "kv value surrogate": lambda s, r: KvStore(s).set("plugin", "ns", "k", {"v": SURROGATE}),
    "run id NUL": lambda s, r: RunLedgerStore(s).get(NUL, scope=ReadScope.host()),
    "run field too long": lambda s, r: RunLedgerStore(s).create("run-bad", runner_id=LONG * 2),
    "run reason NUL": lambda s, r: RunLedgerStore(s).transition("run-x", "running", NUL),
    "run event data NUL": lambda s, r: RunLedgerStore(s).append_events(
        [RunEventRecord(run_id="run-x", sequence=1, type="t", data={"k": NUL})]),
    "artifact id NUL": lambda s, r: ArtifactStore(s, r).metadata(NUL, scope=ReadScope.host()),
    "artifact owner too long": lambda s, r: ArtifactStore(s, r).register_bytes(
        b"x", artifact_type="file", conversation_id=LONG),
    "session snapshot NUL": lambda s, r: RuntimeSessionStore(s).upsert_active(
        ConversationOwner("r", "b", "c"), snapshot=NUL),
    "knowledge content NUL": lambda s, r: KnowledgeStore(s).ingest("kb", "d", "t", NUL),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
async def test_bad_input_leaves_the_transaction_usable(db, uid, tmp_path, fails_with, name):
    conv = uid("conv")
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await BAD_CALLS[name](s, tmp_path)
        await TranscriptStore(s).append(event_id="e", conversation_id=conv, role="user", content="ok")
    async with db.transaction() as s:
        assert [i.content for i in (await TranscriptStore(s).page(conv)).items] == ["ok"]
