"""One event → one authorized, journaled, streamed run, through real Ray actors and Postgres."""
from __future__ import annotations

import pytest

from protocol.events import EventEnvelope

pytestmark = pytest.mark.ray


def message(conv: str, text: str, **kw) -> EventEnvelope:
    return EventEnvelope(event_type="message.received", conversation_id=conv,
                         actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text}, **kw)


async def collect(stream):
    return [frame async for frame in stream]


async def test_echo_run_streams_frames_and_records_every_fact(host, conv):
    frames = await collect(await host.submit(message(conv, "hello brave world"), "echo"))
    types = [f["type"] for f in frames]
    assert types[0] == "run.started" and types[-1] == "run.completed"
    assert types.count("run.completed") + types.count("run.failed") == 1
    deltas = "".join(f["data"]["chunk"]["content"] for f in frames if f["type"] == "message.delta")
    assert deltas == "echo: hello brave world"
    assert [f["sequence"] for f in frames] == list(range(len(frames)))
    run_id = frames[0]["run_id"]

    run = await host.read("run_get", run_id=run_id)
    assert run["status"] == "completed" and run["conversation_id"] == conv
    events = await host.read("run_events_page", run_id=run_id, limit=100)
    assert [e["type"] for e in events["items"]] == types
    page = await host.read("history_page", conversation_id=conv, limit=10)
    assert [(i["role"], i["content"]) for i in page["items"]] == [
        ("user", "hello brave world"), ("assistant", "echo: hello brave world")]
    assert [i["seq"] for i in page["items"]] == [1, 2]


async def test_host_start_warms_the_worker_pools_of_runners_agents_run_in_a_pool(host):
    from tests.waiting import wait_until
    echo = "plugin:builtin/echo/default"

    def warm() -> bool:  # warming runs in the background after start
        pool = host.worker_pools.get(echo)
        return pool is not None and pool.size >= host.config.pools.workers_min
    await wait_until(warm, timeout=30, interval=0.1, what=f"the {echo} worker pool to be warmed")
