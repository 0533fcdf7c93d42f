"""ConversationSessionActor: harness turns of one session are serialized and resumable (SPEC §10)."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import ray

from actors.session_actor import session_actor_name
from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy
from protocol.sessions import SessionKey
from tests.actors.helpers import collect, message, run_to_end, wait_until

pytestmark = pytest.mark.ray

FAKE_CLAUDE = str(Path(__file__).resolve().parents[1] / "fixtures" / "harness" / "fake_claude")
HARNESS = "plugin:builtin/harness/default"


@pytest.fixture(scope="module")
async def harness_agent(host, tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    await host.put_agent("claude", AgentConfig(
        runner_id=HARNESS, multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=60,
        runner_config={"kind": "claude", "command": [sys.executable, FAKE_CLAUDE], "workspace_root": str(root),
                       "kill_grace_s": 0.5},
        resource_policy=ResourcePolicy(harness_gateway=True)))
    return "claude"


def session_ids(frames):
    return [f["data"]["value"] for f in frames
            if f["type"] == "state.updated" and f["data"]["key"] == "external.session_id"]


async def until_session_started(stream) -> list[dict]:
    """Frames up to the one recording the new native session: the harness subprocess has started it."""
    frames = []
    async for frame in stream:
        frames.append(frame)
        if session_ids([frame]):
            return frames
        assert frame["type"] not in ("run.completed", "run.failed"), frames
    raise AssertionError(f"the run ended before its harness session started: {frames}")


async def session_handle(host, conv):
    key = SessionKey(HARNESS, "claude", conv, None)
    generation = await host.registry.config_version.remote()  # part of the session actors' names
    return ray.get_actor(session_actor_name(key, generation), namespace=host.config.namespace)


async def test_two_turns_resume_the_same_external_session(host, harness_agent, conv):
    first = await run_to_end(host, message(conv, "hello"), harness_agent)
    assert first[-1]["type"] == "run.completed", first[-1]
    [sid] = session_ids(first)
    second = await run_to_end(host, message(conv, "again [[argv]]"), harness_agent)
    assert second[-1]["type"] == "run.completed"
    argv = json.loads([f for f in second if f["type"] == "message.completed"][0]["data"]["message"]["content"]
                      .removeprefix("ARGV:"))
    assert argv[argv.index("--resume") + 1] == sid
    assert session_ids(second) == []  # same session: nothing new to record
    row = await host.read("session_get", owner={
        "owner_type": "conversation", "runner_id": HARNESS, "binding_id": "claude",
        "conversation_id": conv, "thread_id": None})
    assert row["external_session_id"] == sid and row["status"] == "active"


async def test_concurrent_events_on_one_conversation_are_serialized(host, harness_agent, conv):
    began = asyncio.get_running_loop().time()
    results = await asyncio.gather(*(run_to_end(host, message(conv, f"turn {i} [[sleep:0.8]]"), harness_agent)
                                     for i in range(2)))
    assert all(r[-1]["type"] == "run.completed" for r in results)
    assert asyncio.get_running_loop().time() - began >= 1.6  # one subprocess at a time
    info = await (await session_handle(host, conv)).ping.remote()
    assert info["max_concurrent_turns"] == 1 and info["turns"] == 2


async def test_a_lost_session_actor_is_rebuilt_from_postgres(host, harness_agent, conv):
    first = await run_to_end(host, message(conv, "remember me"), harness_agent)
    [sid] = session_ids(first)
    ray.kill(await session_handle(host, conv), no_restart=True)

    async def gone() -> bool:  # a dead actor's name is released: the next turn must build a new one
        try:
            await session_handle(host, conv)
        except ValueError:
            return True
        return False
    await wait_until(gone, timeout=30, what="the killed session actor's name to be released")
    again = await run_to_end(host, message(conv, "still there? [[argv]]"), harness_agent)
    assert again[-1]["type"] == "run.completed"
    argv = json.loads([f for f in again if f["type"] == "message.completed"][0]["data"]["message"]["content"]
                      .removeprefix("ARGV:"))
    assert argv[argv.index("--resume") + 1] == sid


async def test_cancel_kills_the_harness_turn(host, harness_agent, conv):
    stream = await host.submit(message(conv, "slow [[sleep:30]]"), harness_agent)
    seen = await asyncio.wait_for(until_session_started(stream), 60)  # the subprocess is live, in its sleep
    await host.cancel(seen[0]["run_id"], "stop")
    frames = seen + await collect(stream)
    assert frames[-1]["data"]["code"] == "run.cancelled"
    after = await run_to_end(host, message(conv, "next turn"), harness_agent)
    assert after[-1]["type"] == "run.completed"  # the session is free again
