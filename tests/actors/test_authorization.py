"""SPEC §3: every runner-API call is checked against the snapshot frozen at run start."""
from __future__ import annotations

import json

import pytest

from protocol.agents import ResourcePolicy
from protocol.events import EventEnvelope
from tests.actors.conftest import probe_agent
from tests.actors.helpers import until_delta

pytestmark = pytest.mark.ray


def message(conv: str, text: str = "hi") -> EventEnvelope:
    return EventEnvelope(event_type="message.received", conversation_id=conv,
                         actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text})


async def outcomes(host, agent_id: str, conv: str) -> tuple[list[dict], list[dict]]:
    frames = [f async for f in await host.submit(message(conv), agent_id)]
    assert frames[-1]["type"] == "run.completed", frames[-1]
    completed = [f for f in frames if f["type"] == "message.completed"][0]
    return json.loads(completed["data"]["message"]["content"]), frames


ALL_UNGRANTED = [
    ["invoke_llm", {"model_id": "gpt", "messages": [{"role": "user", "content": "x"}]}],
    ["call_tool", {"tool_name": "calculator", "parameters": {}}],
    ["retrieve_knowledge", {"kb_id": "docs", "query": "x"}],
    ["history_page", {"conversation_id": "someone-elses-conversation"}],
    ["storage_set", {"area": "plugin", "key": "k", "value": 1}],
    ["state_set", {"scope": "conversation", "key": "k", "value": 1}],
]


async def test_ungranted_resources_are_unauthorized(host, conv):
    # policy grants nothing beyond the defaults (no models/tools/kbs/storage, no state)
    await host.put_agent("probe-narrow", probe_agent(
        policy=ResourcePolicy(state=False, storage=[]), calls=ALL_UNGRANTED + [["history_page", {}]]))
    results, _ = await outcomes(host, "probe-narrow", conv)
    assert [r.get("code") for r in results[:-1]] == ["unauthorized"] * len(ALL_UNGRANTED)
    assert results[-1]["ok"] is True  # own conversation's history is granted


async def test_manifest_caps_what_a_generous_policy_grants(host, conv):
    generous = ResourcePolicy(models=None, tools=None, knowledge_bases=None, storage=["plugin"],
                              cross_conversation_history=True)
    await host.put_agent("noperm", probe_agent(policy=generous, runner="plugin:test/noperm/default",
                                               calls=ALL_UNGRANTED + [["history_page", {}]]))
    results, _ = await outcomes(host, "noperm", conv)
    assert all(r.get("code") == "unauthorized" for r in results), results


async def test_granted_calls_work_and_state_is_scoped(host, conv):
    await host.put_agent("probe-state", probe_agent(calls=[
        ["state_set", {"scope": "conversation", "key": "color", "value": "blue"}],
        ["state_get", {"scope": "conversation", "key": "color"}],
        ["steering_pull", {}],
        ["run_get", {}],
    ]))
    results, frames = await outcomes(host, "probe-state", conv)
    assert [r["ok"] for r in results] == [True, True, True, True]
    assert results[1]["value"]["value"] == "blue"
    assert results[3]["value"]["run_id"] == frames[0]["run_id"]
    assert results[3]["value"]["status"] == "running"


async def test_calls_after_the_run_ended_are_unauthorized(host, conv):
    await host.put_agent("probe-keep", probe_agent(keep_api=True))
    await outcomes(host, "probe-keep", conv)
    await host.put_agent("probe-stale", probe_agent(use_stale=True, calls=[
        ["history_page", {}], ["state_get", {"scope": "conversation", "key": "x"}]]))
    results, _ = await outcomes(host, "probe-stale", conv)
    assert [r.get("code") for r in results] == ["unauthorized", "unauthorized"]


async def test_snapshot_frozen_at_start_survives_a_config_change(host, conv, tmp_path):
    gate = tmp_path / "gate"  # the probe makes its call only once the policy has changed
    await host.put_agent("probe-frozen", probe_agent(gate=str(gate), calls=[["history_page", {}]]))
    stream = await host.submit(message(conv), "probe-frozen")
    live = await until_delta(stream)  # the run is live in its runner, its call not made yet
    assert live[0]["type"] == "run.started"
    # mid-run, revoke history for this agent; then let the run make its call
    await host.put_agent("probe-frozen", probe_agent(policy=ResourcePolicy(history=[]),
                                                     calls=[["history_page", {}]]))
    gate.write_text("open")
    frames = live + [f async for f in stream]
    assert frames[-1]["type"] == "run.completed", frames[-1]
    during = json.loads([f for f in frames if f["type"] == "message.completed"][0]["data"]["message"]["content"])
    assert during[0]["ok"] is True  # the frozen grant is what counts
    after, _ = await outcomes(host, "probe-frozen", conv)
    assert after[0]["code"] == "unauthorized"  # the next run sees the new policy


async def test_a_scheduled_run_without_a_conversation_reads_only_its_own_event_and_run(host, conv):
    """Black box (SPEC §3): a runner started by a ``schedule.triggered`` event with no conversation
    must not page another conversation's events or runs, nor read its run or its artifact by id."""
    import uuid
    secret_artifact = f"art-{uuid.uuid4().hex[:12]}"
    await host.put_agent("probe-owner", probe_agent(
        artifact={"artifact_id": secret_artifact, "text": "the other tenant's notes"}))
    _, owner_frames = await outcomes(host, "probe-owner", conv)
    other_run = owner_frames[0]["run_id"]
    other_event = owner_frames[0]["data"]["event_id"]

    ledger = ResourcePolicy(run_ledger=["get", "list", "events_page"])
    calls = [["event_page", {"limit": 100}], ["run_list", {"limit": 100}],
             ["event_get", {"event_id": other_event}], ["run_get", {"run_id": other_run}],
             ["run_events_page", {"run_id": other_run}], ["artifact_read", {"artifact_id": secret_artifact}],
             ["event_page", {"conversation_id": conv}], ["run_list", {"conversation_id": conv}],
             ["run_get", {}]]
    await host.put_agent("probe-scheduled", probe_agent(policy=ledger, calls=calls).model_copy(
        update={"event_types": ["schedule.triggered"]}))
    tick = EventEnvelope(event_type="schedule.triggered", source="scheduler", data={"cron": "*/5 * * * *"})
    frames = [f async for f in await host.submit(tick, "probe-scheduled")]
    assert frames[-1]["type"] == "run.completed", frames[-1]
    completed = [f for f in frames if f["type"] == "message.completed"][0]
    results = json.loads(completed["data"]["message"]["content"])
    own_run = frames[0]["run_id"]
    events, runs = results[0], results[1]
    assert events["ok"] and [e["event_id"] for e in events["value"]["items"]] == [tick.event_id], events
    assert runs["ok"] and [r["run_id"] for r in runs["value"]["items"]] == [own_run], runs
    assert [r.get("code") for r in results[2:8]] == ["unauthorized"] * 6, results[2:8]
    assert results[8]["ok"] and results[8]["value"]["run_id"] == own_run
