"""A lost native session, end to end on local Ray: Host → RunActor → ConversationSessionActor →
HarnessRunner → fake_claude (which keeps a real session store and fails a lost session the way
Claude Code 2.1.x does).

After the store is deleted, the next turn completes in a new native session, the client's stream
carries ``session.resume_failed`` (and the ledger records it, the run's metadata says
``session.resumed: false`` and the conversation's EventLog holds the system event), conversation state and
``agent_runtime_session`` hold the new id, and the turn after resumes the new id.
"""
from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from serve.config import load_settings

FAKE_CLAUDE = str(Path(__file__).resolve().parents[1] / "fixtures" / "harness" / "fake_claude")
HARNESS = "plugin:builtin/harness/default"

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


async def turn(host, conv: str, text: str) -> list[dict]:
    from protocol.events import EventEnvelope
    event = EventEnvelope(event_type="message.received", conversation_id=conv,
                          actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text})
    frames = [f async for f in await host.submit(event, "coder")]
    assert frames[-1]["type"] == "run.completed", frames[-1]
    return frames


def session_ids(frames):
    return [f["data"]["value"] for f in frames if f["type"] == "state.updated"]


def reply(frames) -> str:
    return next(f for f in frames if f["type"] == "message.completed")["data"]["message"]["content"]


async def test_a_lost_native_session_is_recovered_through_the_host(ray_session, pg_url, tmp_path):
    from actors.host import Host

    store = tmp_path / "claude-config"
    config = tmp_path / "runnerhost.toml"
    config.write_text(textwrap.dedent(f"""
        [host]
        namespace = "rh-recover-{uuid.uuid4().hex[:8]}"
        stale_run_check_s = 0
        [storage]
        database_url = "{pg_url}"
        data_dir = "{tmp_path / 'data'}"
        [pools]
        run_actors_min = 1
        run_actors_max = 2
        workers_min = 0
        health_check_s = 0
        [agents.coder]
        runner_id = "{HARNESS}"
        multitask_strategy = "enqueue"
        timeout_s = 60
        [agents.coder.runner_config]
        kind = "claude"
        command = ["{sys.executable}", "{FAKE_CLAUDE}"]
        workspace_root = "{tmp_path / 'ws'}"
        env = {{ CLAUDE_CONFIG_DIR = "{store}" }}
    """), encoding="utf-8")
    host = await Host.start(load_settings(config, env={}).host_config())
    try:
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        owner = {"owner_type": "conversation", "runner_id": HARNESS, "binding_id": "coder",
                 "conversation_id": conv, "thread_id": None}
        [first] = session_ids(await turn(host, conv, "remember kiwi"))
        for path in store.rglob(f"{first}.jsonl"):
            path.unlink()  # the native session is gone (cleaned home, another node, expiry)

        frames = await turn(host, conv, "what was it? [[history]]")
        assert reply(frames) == "HISTORY:[]"  # a fresh native session ...
        [second] = session_ids(frames)
        assert second != first
        [action] = [f["data"] for f in frames if f["type"] == "action.requested"]
        assert action["action"] == "session.resume_failed"  # ... and the client is told
        assert action["payload"]["previous_session_id"] == first and action["payload"]["new_session_id"] == second
        assert "No conversation found" in action["payload"]["reason"]
        ledger = await host.read("run_events_page", run_id=frames[-1]["run_id"], limit=100)
        assert any(e["type"] == "action.requested" for e in ledger["items"])  # and the record
        run = await host.read("run_get", run_id=frames[-1]["run_id"])  # the run's ledger metadata says so
        lost = (run.get("metadata") or {}).get("session")
        assert lost is not None, run.get("metadata")
        assert lost["resumed"] is False
        assert lost["previous_session_id"] == first and lost["new_session_id"] == second
        events = (await host.read("event_page", scope={"conversation_id": conv}, limit=100))["items"]
        [lost_event] = [e for e in events if e["event_type"] == "session.resume_failed"]  # and so does the EventLog
        # the read model exposes no run_id/data columns; the host's id for this record names the run
        assert lost_event["source"] == "system" and lost_event["conversation_id"] == conv
        assert lost_event["event_id"] == f"{frames[-1]['run_id']}:session.resume_failed"
        row = await host.read("session_get", owner=owner)
        assert row["external_session_id"] == second

        later = await turn(host, conv, "and now? [[argv]]")
        argv = json.loads(reply(later).removeprefix("ARGV:"))
        assert argv[argv.index("--resume") + 1] == second
        assert session_ids(later) == []
    finally:
        await host.close()
