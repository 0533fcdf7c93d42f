"""SPEC §8: the six multitask strategies on one conversation, black-box, plus the steering audit."""
from __future__ import annotations

import asyncio

import pytest

from protocol.errors import ErrorCode, RunnerHostError
from tests.actors.helpers import collect, events_of, message, run_to_end, text_of, transcript_of, until_delta

pytestmark = pytest.mark.ray


async def start(host, conv, agent, text):
    stream = await host.submit(message(conv, text), agent)
    first = await stream.__anext__()
    return stream, first


async def test_steer_absorbs_a_second_message_and_audits_it(host, conv):
    stream, first = await start(host, conv, "steer", "one two three four five six")
    assert first["type"] == "run.started", first
    await until_delta(stream)  # the run is live and pulls steering after every delta
    lane = await host.registry.run_actors.remote([first["run_id"]])
    assert lane and lane[0]["actor"] is not None, ("registry lost the active run", lane,
                                                    await host.registry.active_count.remote())
    steered = await collect(await host.submit(message(conv, "also this"), "steer"))
    assert [f["type"] for f in steered] == ["event.steered"]
    assert steered[0]["data"]["claimed_by_run_id"] == first["run_id"]
    frames = await collect(stream)
    assert frames[-1]["type"] == "run.completed"
    assert "steered: also this" in text_of(frames)
    events = await events_of(host, conv)
    by_type = {}
    for e in events:
        by_type.setdefault(e["event_type"], []).append(e)
    source = [e for e in by_type["message.received"] if e["input_summary"] == "also this"][0]
    assert source["metadata"]["steering"]["claimed_by_run_id"] == first["run_id"]
    assert source["metadata"]["steering"]["status"] == "injected"
    assert source["metadata"]["steering"]["trigger_behavior"] == "absorbed_into_active_run"
    assert [e["event_type"] for e in events].count("steering.injected") == 1
    # the user transcript of the steered message is still written
    assert "also this" in [i["content"] for i in await transcript_of(host, conv)]


async def test_unpulled_steering_is_dropped_and_overflow_falls_back(host, conv):
    # "reject"-free agent whose runner never pulls: steering claims still land in the queue
    from protocol.agents import MultitaskStrategy
    from tests.actors.conftest import echo_agent
    await host.put_agent("steer-deaf", echo_agent(MultitaskStrategy.STEER, delay_s=0.3, chunks=6))
    stream, first = await start(host, conv, "steer-deaf", "a b c d e f")
    live = await until_delta(stream)  # the run is live in its runner: steering now claims it
    claimed = [await collect(await host.submit(message(conv, f"extra {i}"), "steer-deaf")) for i in range(3)]
    assert all(c[0]["type"] == "event.steered" for c in claimed)
    overflow = await host.submit(message(conv, "one too many"), "steer-deaf")  # capacity is 3
    overflow_frames = await collect(overflow)
    assert overflow_frames[0]["type"] == "run.queued"  # normal path, after the active run
    assert overflow_frames[-1]["type"] == "run.completed"
    assert "echo: one too many" in text_of(overflow_frames)
    frames = [first] + live + await collect(stream)
    assert frames[-1]["type"] == "run.completed", frames[-1]
    assert "steered" not in text_of(frames)  # never pulled
    events = await events_of(host, conv)
    assert [e["event_type"] for e in events].count("steering.dropped") == 3
    dropped_sources = [e for e in events if e["event_type"] == "message.received"
                       and (e["metadata"].get("steering") or {}).get("status") == "dropped"]
    assert len(dropped_sources) == 3


async def test_enqueue_runs_in_arrival_order(host, conv):
    s1, f1 = await start(host, conv, "enqueue", "first")
    s2 = await host.submit(message(conv, "second"), "enqueue")
    frames2 = await collect(s2)
    frames1 = [f1] + await collect(s1)
    assert frames2[0]["type"] == "run.queued" and frames2[0]["data"]["behind"] == [f1["run_id"]]
    assert frames1[-1]["type"] == frames2[-1]["type"] == "run.completed"
    r1 = await host.read("run_get", run_id=f1["run_id"])
    r2 = await host.read("run_get", run_id=frames2[0]["run_id"])
    assert r2["started_at"] >= r1["finished_at"]
    assert [i["content"] for i in await transcript_of(host, conv)] == [
        "first", "second", "echo: first", "echo: second"]


async def test_reject_refuses_and_changes_nothing(host, conv):
    s1, f1 = await start(host, conv, "reject", "busy now")
    before = len(await events_of(host, conv))
    with pytest.raises(RunnerHostError) as err:
        await host.submit(message(conv, "not now"), "reject")
    assert err.value.code is ErrorCode.CONFLICT and err.value.http_status == 409
    assert len(await events_of(host, conv)) == before
    assert (await collect(s1))[-1]["type"] == "run.completed"


async def test_interrupt_cancels_the_active_run_and_keeps_its_facts(host, conv):
    s1, f1 = await start(host, conv, "interrupt", "long " * 10)
    live = await until_delta(s1)  # mid-run: it has streamed, and has more to stream
    frames2 = await run_to_end(host, message(conv, "stop that"), "interrupt")
    frames1 = [f1] + live + await collect(s1)
    assert frames1[-1]["type"] == "run.failed" and frames1[-1]["data"]["code"] == "run.cancelled"
    assert frames2[-1]["type"] == "run.completed"
    assert (await host.read("run_get", run_id=f1["run_id"]))["status"] == "cancelled"
    contents = [i["content"] for i in await transcript_of(host, conv)]
    assert contents[0].startswith("long") and "stop that" in contents  # the interrupted run's facts stay


async def test_rollback_leaves_no_trace_of_the_rolled_back_run(host, conv):
    done = await run_to_end(host, message(conv, "keep me"), "counter")
    assert done[-1]["type"] == "run.completed"
    s1, f1 = await start(host, conv, "rollback", "undo " * 10)
    live = await until_delta(s1)  # mid-run: it has streamed, and has more to stream
    frames2 = await run_to_end(host, message(conv, "after rollback"), "rollback")
    frames1 = [f1] + live + await collect(s1)
    assert frames1[-1]["data"]["code"] == "run.cancelled" and frames2[-1]["type"] == "run.completed"
    contents = [i["content"] for i in await transcript_of(host, conv)]
    assert not any(c.startswith("undo") for c in contents), contents
    assert "after rollback" in contents and "keep me" in contents
    events = [e["event_type"] for e in await events_of(host, conv)]
    assert "run.rolled_back" in events


async def test_parallel_runs_overlap(host, conv):
    words = " ".join(["w"] * 9)  # 10 chunks of 0.3 s each: ~3 s per run
    s1, f1 = await start(host, conv, "slow", words)
    s2, f2 = await start(host, conv, "slow", words)
    assert f1["type"] == f2["type"] == "run.started"  # neither was queued behind the other
    r1, r2 = await asyncio.gather(collect(s1), collect(s2))
    assert r1[-1]["type"] == r2[-1]["type"] == "run.completed"
    # the ledger shows the overlap: each started before the other finished (no wall-clock threshold)
    run1 = await host.read("run_get", run_id=f1["run_id"])
    run2 = await host.read("run_get", run_id=f2["run_id"])
    assert run1["started_at"] < run2["finished_at"] and run2["started_at"] < run1["finished_at"], (run1, run2)
