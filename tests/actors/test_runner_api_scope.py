"""SPEC §3: every runner-facing read is scoped — and a run whose event has no conversation (a
schedule, a webhook) reads its own event and run, never an unfiltered log.

No Ray: the real :class:`RunnerApiService` over the real :class:`StorageService` on both
database backends. The facts of another conversation, of another conversation-less run and of
another bot are written first; each API of a conversation-less (and a conversation-bound) run
must then refuse or filter them out.
"""
from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

import pytest

from actors.core.authz import compute_access
from actors.core.runner_api import RunIdentity, RunnerApiService
from actors.core.steering import SteeringQueue
from actors.core.storage_service import StorageService
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from protocol.manifest import Permissions, RunnerManifest
from store import ArtifactStore

RUNNER = "plugin:t/scoped/default"
ALL_READS = Permissions(history=["page", "search"], events=["get", "page"], artifacts=["metadata", "read"],
                        run_ledger=["get", "list", "events_page", "cancel"])
POLICY = ResourcePolicy(run_ledger=["get", "list", "events_page", "cancel"])


class StorageBackend:
    """The runner API's backend over a real StorageService and database (what the storage actor does)."""

    def __init__(self, db, artifact_root) -> None:
        self.db = db
        self.service = StorageService(lambda session: ArtifactStore(session, artifact_root))
        self.reads: list[tuple[str, dict]] = []

    async def read(self, kind, **kwargs):
        self.reads.append((kind, kwargs))
        async with self.db.transaction() as session:
            return await self.service.read(session, kind, kwargs)

    async def write(self, kind, **kwargs):
        async with self.db.transaction() as session:
            return await self.service.write(session, kind, kwargs)


@dataclass
class Facts:
    """What one accepted run left behind."""

    run_id: str
    event_id: str
    conversation_id: str | None
    artifact_id: str


async def accept(backend: StorageBackend, *, conversation_id: str | None, bot_id: str | None = None,
                 event_type: str = "message.received") -> Facts:
    run_id = f"run_{uuid.uuid4().hex}"
    event = EventEnvelope(event_type=event_type, conversation_id=conversation_id, bot_id=bot_id,
                          source="scheduler" if conversation_id is None else "api",
                          input={"text": "secret plans" if event_type == "message.received" else None})
    await backend.write("run_accept", run_id=run_id, event=event.model_dump(mode="json"), agent_id="a",
                        binding_id="a@1", runner_id=RUNNER, deadline_at=None, scope_keys={},
                        frames=[{"type": "run.started", "data": {}, "sequence": 0}])
    artifact = await backend.write("artifact_created", run_id=run_id, runner_id=RUNNER,
                                   conversation_id=conversation_id, fallback_id=f"art_{run_id}",
                                   data={"artifact_type": "file",
                                         "content_base64": base64.b64encode(b"private bytes").decode()})
    return Facts(run_id, event.event_id, conversation_id, artifact["artifact_id"])


def api_for(backend: StorageBackend, facts: Facts, *, bot_id: str | None = None,
            policy: ResourcePolicy = POLICY) -> RunnerApiService:
    manifest = RunnerManifest(id=RUNNER, label="scoped", permissions=ALL_READS)
    binding = AgentBinding.from_agent("a", AgentConfig(runner_id=RUNNER, resource_policy=policy))
    snapshot = compute_access(run_id=facts.run_id, manifest=manifest, binding=binding,
                              conversation_id=facts.conversation_id, thread_id=None)
    identity = RunIdentity(facts.run_id, RUNNER, "a", bot_id, None, facts.conversation_id, None,
                           None, None, None, None)

    async def pulled(_entries):
        return None

    async def cancel(run_id, reason):
        return {"run_id": run_id, "status": "running"}
    return RunnerApiService(snapshot, identity, backend, SteeringQueue(4), pulled,
                            lambda scope: f"key:{scope}", cancel_run=cancel)


@pytest.fixture
async def world(db, tmp_path):
    """A conversation with a run, another conversation-less run, and the conversation-less run under test."""
    backend = StorageBackend(db, tmp_path)
    other_conversation = await accept(backend, conversation_id=f"conv-{uuid.uuid4().hex[:8]}")
    other_scheduled = await accept(backend, conversation_id=None, event_type="schedule.triggered")
    mine = await accept(backend, conversation_id=None, event_type="schedule.triggered")
    return backend, mine, other_conversation, other_scheduled


async def refused(api: RunnerApiService, method: str, **kwargs) -> None:
    with pytest.raises(RunnerHostError) as err:
        await api.call(method, kwargs)
    assert err.value.code is ErrorCode.UNAUTHORIZED, (method, kwargs, err.value)


async def test_conversation_less_run_pages_only_its_own_events(world):
    backend, mine, other_conv, other_sched = world
    api = api_for(backend, mine)
    page = await api.call("event_page", {"limit": 100})
    assert [e["event_id"] for e in page["items"]] == [mine.event_id]
    await refused(api, "event_page", conversation_id=other_conv.conversation_id)


async def test_conversation_less_run_gets_only_its_own_event(world):
    backend, mine, other_conv, other_sched = world
    api = api_for(backend, mine)
    assert (await api.call("event_get", {"event_id": mine.event_id}))["event_id"] == mine.event_id
    await refused(api, "event_get", event_id=other_conv.event_id)
    await refused(api, "event_get", event_id=other_sched.event_id)  # also conversation-less: not its own


async def test_conversation_less_run_lists_and_reads_only_its_own_run(world):
    backend, mine, other_conv, other_sched = world
    api = api_for(backend, mine)
    listed = await api.call("run_list", {"limit": 100})
    assert [r["run_id"] for r in listed["items"]] == [mine.run_id] and listed["total_count"] == 1
    await refused(api, "run_list", conversation_id=other_conv.conversation_id)
    assert (await api.call("run_get", {}))["run_id"] == mine.run_id
    for other in (other_conv, other_sched):
        await refused(api, "run_get", run_id=other.run_id)
        await refused(api, "run_events_page", run_id=other.run_id)
        await refused(api, "run_cancel", run_id=other.run_id)
    assert [e["sequence"] for e in (await api.call("run_events_page", {}))["items"]] == [0]


async def test_conversation_less_run_reads_only_its_own_artifacts(world):
    backend, mine, other_conv, other_sched = world
    api = api_for(backend, mine)
    own = await api.call("artifact_read", {"artifact_id": mine.artifact_id})
    assert base64.b64decode(own["content_base64"]) == b"private bytes"
    for other in (other_conv, other_sched):
        await refused(api, "artifact_metadata", artifact_id=other.artifact_id)
        await refused(api, "artifact_read", artifact_id=other.artifact_id)
        await refused(api, "artifact_read_range", artifact_id=other.artifact_id, offset=0, length=4)


async def test_conversation_less_run_has_no_history(world):
    backend, mine, other_conv, _ = world
    api = api_for(backend, mine)
    await refused(api, "history_page")
    await refused(api, "history_search", query="plans")
    await refused(api, "history_page", conversation_id=other_conv.conversation_id)


async def test_conversation_bound_run_never_sees_another_bot_or_a_conversation_less_run(world, db):
    backend, _, _, other_sched = world
    conversation = f"conv-{uuid.uuid4().hex[:8]}"
    mine = await accept(backend, conversation_id=conversation, bot_id="bot-a")
    intruder = await accept(backend, conversation_id=conversation, bot_id="bot-b")
    api = api_for(backend, mine, bot_id="bot-a")
    page = await api.call("event_page", {"limit": 100})
    assert [e["event_id"] for e in page["items"]] == [mine.event_id]
    await refused(api, "event_get", event_id=intruder.event_id)
    await refused(api, "event_get", event_id=other_sched.event_id)
    assert [r["run_id"] for r in (await api.call("run_list", {}))["items"]] == [mine.run_id]
    await refused(api, "run_get", run_id=intruder.run_id)
    await refused(api, "run_get", run_id=other_sched.run_id)
    await refused(api, "artifact_metadata", artifact_id=other_sched.artifact_id)


async def test_every_read_the_runner_api_makes_carries_a_bounded_scope(world):
    """The store is never asked for "everything" on a runner's behalf."""
    backend, mine, _, _ = world
    api = api_for(backend, mine)
    for method, kwargs in [("event_page", {}), ("event_get", {"event_id": mine.event_id}), ("run_list", {}),
                           ("run_get", {}), ("run_events_page", {}), ("artifact_metadata", {"artifact_id": mine.artifact_id}),
                           ("artifact_read", {"artifact_id": mine.artifact_id}),
                           ("artifact_read_range", {"artifact_id": mine.artifact_id, "offset": 0, "length": 2})]:
        backend.reads.clear()
        await api.call(method, kwargs)
        assert backend.reads, method
        for kind, sent in backend.reads:
            scope = sent.get("scope")
            assert scope is not None and not scope.get("unrestricted"), (method, kind, sent)
            assert scope.get("run_id") == mine.run_id or scope.get("conversation_id"), (method, kind, sent)
