"""The console's read ops over the real write path (StorageService without Ray, Postgres + SQLite).

Runs are written with the ops the host uses (``run_accept``, ``state_set``, ``artifact_created``,
``event_accept`` with a steering claim, ``steering_audit``, ``finish_run``); the new reads must see
exactly what those wrote.
"""
from __future__ import annotations

import base64
import time
import uuid

import pytest

from actors.core.storage_service import StorageService
from protocol.errors import ErrorCode, RunnerHostError
from protocol.events import EventEnvelope
from store.artifacts import ArtifactStore
from protocol.scopes import scope_key

RUNNER = "plugin:builtin/echo/default"


@pytest.fixture
def service(tmp_path) -> StorageService:
    return StorageService(lambda session: ArtifactStore(session, tmp_path))


def envelope(conv: str, text: str, **extra) -> dict:
    return EventEnvelope(event_type="message.received", conversation_id=conv, input={"text": text},
                         actor={"actor_type": "user", "actor_id": "u1"}, **extra).model_dump(mode="json")


async def start(db, service, conv: str, agent: str, text: str = "hi") -> tuple[str, dict]:
    run_id = f"run_{uuid.uuid4().hex}"
    event = envelope(conv, text)
    async with db.transaction() as s:
        await service.write(s, "run_accept", dict(run_id=run_id, event=event, agent_id=agent,
                                                   binding_id=f"{agent}@1", runner_id=RUNNER,
                                                   deadline_at=time.time() + 60, scope_keys={},
                                                   status="running"))
    return run_id, event


async def finish(db, service, run_id: str, status: str, reason: str | None = None) -> None:
    async with db.transaction() as s:
        await service.write(s, "finish_run", dict(run_id=run_id, status=status, reason=reason, frames=[],
                                                   assistant=None, dropped=[]))


async def read(db, service, kind: str, **kwargs):
    async with db.transaction() as s:
        return await service.read(s, kind, kwargs)


async def test_filters_and_counts_by_agent_status_and_time(db, service):
    conv = f"c-{uuid.uuid4().hex[:8]}"
    a, b = f"agent-a-{uuid.uuid4().hex[:6]}", f"agent-b-{uuid.uuid4().hex[:6]}"
    r1, _ = await start(db, service, conv, a)
    r2, _ = await start(db, service, conv, a)
    r3, _ = await start(db, service, conv, b)
    await finish(db, service, r1, "completed", "stop")
    await finish(db, service, r3, "failed", "runner.error")
    page = await read(db, service, "run_list_filtered", agent_id=a)
    assert {r["run_id"] for r in page["items"]} == {r1, r2} and page["total_count"] == 2
    counts = await read(db, service, "run_counts", conversation_id=conv)
    assert counts == [{"status": "completed", "count": 1}, {"status": "failed", "count": 1},
                      {"status": "running", "count": 1}]
    by_agent = await read(db, service, "run_counts", by=["agent_id", "status", "status_reason"],
                          conversation_id=conv)
    assert {(g["agent_id"], g["status"], g["status_reason"], g["count"]) for g in by_agent} == {
        (a, "completed", "stop", 1), (a, "running", None, 1), (b, "failed", "runner.error", 1)}
    later = time.time() + 3600
    assert (await read(db, service, "run_list_filtered", agent_id=a, created_after=later))["items"] == []
    assert (await read(db, service, "run_counts", agent_id=a, created_before=0.0)) == []
    assert len((await read(db, service, "run_list_filtered", agent_id=a, created_before=later))["items"]) == 2


@pytest.mark.parametrize("bad", [{"by": ["password"]}, {"by": []}, {"created_after": -1},
                                 {"agent_id": ""}])
async def test_bad_filters_are_invalid_argument(db, service, bad):
    with pytest.raises(RunnerHostError) as info:
        await read(db, service, "run_counts", **bad)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


async def test_run_artifacts_list_and_ranges_stay_inside_the_run(db, service):
    conv = f"c-{uuid.uuid4().hex[:8]}"
    run_id, _ = await start(db, service, conv, "arts")
    other, _ = await start(db, service, conv, "arts")
    payload = b"report line\n" * 100
    async with db.transaction() as s:
        for rid, name, data in ((run_id, "report.txt", payload), (other, "other.txt", b"x")):
            await service.write(s, "artifact_created", dict(
                run_id=rid, runner_id=RUNNER, conversation_id=conv, fallback_id=f"art_{rid}_1",
                data={"artifact_type": "file", "name": name, "mime_type": "text/plain",
                      "content_base64": base64.b64encode(data).decode()}))
    listed = await read(db, service, "run_artifacts", run_id=run_id)
    assert [a["name"] for a in listed] == ["report.txt"] and listed[0]["size_bytes"] == len(payload)
    chunk = await read(db, service, "run_artifact_range", run_id=run_id, artifact_id=listed[0]["artifact_id"],
                       offset=0, length=1000)
    rest = await read(db, service, "run_artifact_range", run_id=run_id, artifact_id=listed[0]["artifact_id"],
                      offset=1000, length=1000)
    assert base64.b64decode(chunk["content_base64"]) + base64.b64decode(rest["content_base64"]) == payload
    assert rest["eof"] and not chunk["eof"]
    with pytest.raises(RunnerHostError) as info:  # another run's artifact is not reachable through this run
        await read(db, service, "run_artifact_range", run_id=run_id, artifact_id=f"art_{other}_1",
                   offset=0, length=10)
    assert info.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(RunnerHostError) as info:
        await read(db, service, "run_artifacts", run_id="run_missing")
    assert info.value.code is ErrorCode.NOT_FOUND


async def test_steering_audit_of_a_run_queued_injected_dropped(db, service):
    conv = f"c-{uuid.uuid4().hex[:8]}"
    run_id, _ = await start(db, service, conv, "steer")
    other_run, _ = await start(db, service, conv, "steer")
    steered = [envelope(conv, f"steer {i}") for i in range(3)]
    async with db.transaction() as s:
        for ev, claimer in ((steered[0], run_id), (steered[1], run_id), (steered[2], other_run)):
            await service.write(s, "event_accept", dict(
                event=ev, binding_id="steer@1", agent_id="steer", runner_id=RUNNER, run_id=None,
                metadata={"steering": {"status": "queued", "trigger_behavior": "absorbed_into_active_run",
                                       "claimed_by_run_id": claimer, "claimed_runner_id": RUNNER,
                                       "claimed_at": int(time.time())}}))
        await service.write(s, "steering_audit", dict(records=[{
            "source_event_id": steered[0]["event_id"], "status": "injected", "run_id": run_id,
            "runner_id": RUNNER, "conversation_id": conv, "thread_id": None, "at": time.time()}]))
    audit = await read(db, service, "run_steering", run_id=run_id)
    kinds = [(e["event_type"], e["metadata"]["steering"]["status"]) for e in audit]
    assert kinds == [("message.received", "injected"), ("message.received", "queued"),
                     ("steering.injected", "injected")], kinds
    assert audit[2]["metadata"]["steering"]["claimed_by_run_id"] == run_id
    assert steered[2]["event_id"] not in {e["event_id"] for e in audit}  # claimed by the other run


async def test_conversation_state_per_scope_matches_what_runs_wrote(db, service):
    conv = f"c-{uuid.uuid4().hex[:8]}"
    agent = f"stateful-{uuid.uuid4().hex[:6]}"
    run_id, event = await start(db, service, conv, agent)
    keys = {scope: scope_key(scope, RUNNER, agent, None, None, conversation_id=conv, actor_type="user",
                             actor_id="u1") for scope in ("conversation", "actor", "runner")}
    async with db.transaction() as s:
        await service.write(s, "state_set", dict(scope_key=keys["conversation"], key="turns", value=3,
                                                 scope="conversation", runner_id=RUNNER))
        await service.write(s, "state_set", dict(scope_key=keys["actor"], key="name", value={"n": "Ada"},
                                                 scope="actor", runner_id=RUNNER))
    groups = await read(db, service, "conversation_state", conversation_id=conv)
    assert [(g["scope"], g["agent_id"], [(i["key"], i["value"]) for i in g["items"]]) for g in groups] == [
        ("conversation", agent, [("turns", 3)]), ("actor", agent, [("name", {"n": "Ada"})])]
    assert groups[1]["detail"] == "u1"
    assert await read(db, service, "conversation_state", conversation_id="c-nobody") == []
