"""Killing actors mid-run, and 500 events over 50 conversations, counted in Postgres directly.

These tests kill the session host's shared actors, so the module runs last in tests/actors.
"""
from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
import pytest
import ray

from tests.actors.helpers import collect, message, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://")


async def counts(pg_url: str, conv: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        return {
            "events": await conn.fetchval("select count(*) from event_log where conversation_id=$1 "
                                          "and source <> 'system'", conv),
            "runs": await conn.fetchval("select count(*) from agent_run where conversation_id=$1", conv),
            "transcript": await conn.fetchval("select count(*) from transcript where conversation_id=$1", conv),
            "dup_events": await conn.fetchval(
                "select count(*) from (select run_id, sequence from agent_run_event e join agent_run r "
                "using (run_id) where r.conversation_id=$1 group by 1,2 having count(*)>1) d", conv),
        }
    finally:
        await conn.close()


async def running_handle(host, run_id: str):
    entries = await host.registry.run_actors.remote([run_id])
    return entries[0]["actor"].handle()


async def test_killing_a_run_actor_mid_run_records_a_retryable_failure(host, conv, pg_url):
    stream = await host.submit(message(conv, "w " * 20), "slow")
    first = await stream.__anext__()
    await asyncio.sleep(0.5)
    ray.kill(await running_handle(host, first["run_id"]), no_restart=True)
    frames = [first] + await collect(stream)
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["retryable"] is True
    assert frames[-1]["data"]["code"] == "host.run_actor_died"
    run = await host.read("run_get", run_id=first["run_id"])
    assert run["status"] == "failed"
    later = await collect(await host.submit(message(conv, "again"), "echo"))
    assert later[-1]["type"] == "run.completed"
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (2, 2, 0)


async def test_killing_a_runner_worker_mid_run_records_a_retryable_failure(host, conv, pg_url):
    await host.warm_runner("plugin:builtin/echo/default")
    stream = await host.submit(message(conv, "w " * 20), "slow")
    first = await stream.__anext__()
    await asyncio.sleep(0.5)
    for worker in host.worker_pools["plugin:builtin/echo/default"].members():
        ray.kill(worker.handle, no_restart=True)
    frames = [first] + await collect(stream)
    assert frames[-1]["type"] == "run.failed"
    assert frames[-1]["data"]["code"] == "runner.crashed" and frames[-1]["data"]["retryable"] is True
    later = await collect(await host.submit(message(conv, "again"), "echo"))
    assert later[-1]["type"] == "run.completed"  # the pool replaced the dead worker
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (2, 2, 0)


async def test_killing_the_storage_actor_mid_run_loses_and_duplicates_nothing(host, conv, pg_url):
    stream = await host.submit(message(conv, "w " * 6), "slow")
    first = await stream.__anext__()
    await asyncio.sleep(0.4)
    ray.kill(host.storage, no_restart=False)  # it restarts; callers retry idempotent writes
    frames = [first] + await collect(stream)
    assert frames[-1]["type"] == "run.completed", frames[-1]
    later = await collect(await host.submit(message(conv, "after restart"), "echo"))
    assert later[-1]["type"] == "run.completed"
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["transcript"], c["dup_events"]) == (2, 2, 4, 0)


async def test_500_events_over_50_conversations(host, pg_url):
    convs = [f"load-{time.time_ns()}-{i}" for i in range(50)]
    latencies: list[float] = []
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with sem:
            began = time.perf_counter()
            frames = await collect(await host.submit(message(convs[i % 50], f"msg {i}"), "echo"))
            latencies.append(time.perf_counter() - began)
            return frames[-1]["type"] if frames[-1]["type"] == "run.completed" else frames[-1]["data"]["code"]

    began = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(500)))
    elapsed = time.perf_counter() - began
    assert results.count("run.completed") == 500, {r for r in results if r != "run.completed"}
    conn = await asyncpg.connect(dsn(pg_url))
    try:
        runs = await conn.fetch("select status, count(*) n from agent_run where conversation_id = any($1) "
                                "group by status", convs)
        assert {r["status"]: r["n"] for r in runs} == {"completed": 500}
        events = await conn.fetchval("select count(*) from event_log where conversation_id = any($1)", convs)
        assert events == 500
        for conv in convs:
            seqs = [r["seq"] for r in await conn.fetch(
                "select seq from transcript where conversation_id=$1 order by seq", conv)]
            assert seqs == list(range(1, 21)), conv  # 10 user + 10 assistant items, gap-free
    finally:
        await conn.close()
    assert host.run_actors.peak_size <= host.config.pools.run_actors_max
    latencies.sort()
    print(f"\n500 echo runs via the actor layer: {500 / elapsed:.1f} runs/s, "
          f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {latencies[494] * 1000:.0f} ms, "
          f"RunActor pool peak {host.run_actors.peak_size}/{host.config.pools.run_actors_max}")


async def test_dead_idle_run_actors_are_replaced_before_a_run_starts(host, conv, pg_url):
    for actor in host.run_actors.members():  # e.g. their node was lost while they were idle
        ray.kill(actor.handle, no_restart=True)
    frames = await collect(await host.submit(message(conv, "still served"), "echo"))
    assert frames[-1]["type"] == "run.completed", frames[-1]
    assert [f["type"] for f in frames].count("run.started") == 1
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (1, 1, 0)


async def test_runs_left_running_by_a_lost_host_are_finalized(host, conv):
    from tests.actors.helpers import message as make_message
    event = make_message(conv, "orphan").model_dump(mode="json")
    run_id = f"run_orphan_{conv}"
    await host._storage_write("run_accept", run_id=run_id, event=event, agent_id="echo", binding_id="echo@1",
                              runner_id="plugin:builtin/echo/default", conversation_id=conv,
                              deadline_at=time.time() - 120, scope_keys={})
    assert await host._storage_write("recover_stale_runs", grace_s=30.0) >= 1
    run = await host.read("run_get", run_id=run_id)
    assert run["status"] == "failed" and run["status_reason"] == "host.lost"
    events = await host.read("run_events_page", run_id=run_id, limit=10)
    assert events["items"][-1]["type"] == "run.failed" and events["items"][-1]["data"]["retryable"] is True


async def test_the_sweep_finalizes_running_orphans_and_leaves_queued_runs_alone(host, conv):
    from tests.actors.helpers import message as make_message
    common = dict(agent_id="echo", binding_id="echo@1", runner_id="plugin:builtin/echo/default",
                  conversation_id=conv, deadline_at=time.time() - 120, scope_keys={})
    running, queued = f"run_swept_{conv}", f"run_queued_{conv}"
    await host._storage_write("start_run", run_id=running, event=make_message(conv, "lost").model_dump(mode="json"),
                              **common)
    await host._storage_write("run_accept", run_id=queued,
                              event=make_message(conv, "waiting").model_dump(mode="json"), **common)

    async def swept() -> bool:
        return (await host.read("run_get", run_id=running))["status"] == "failed"
    await wait_until(swept, timeout=15.0, interval=0.2)  # the sweep runs every second in these tests
    assert (await host.read("run_get", run_id=running))["status_reason"] == "host.lost"
    # a queued run's deadline starts when the run does: only host start may judge it lost
    assert (await host.read("run_get", run_id=queued))["status"] == "created"
    assert await host._storage_write("recover_stale_runs", grace_s=30.0) >= 1  # what host start does
    assert (await host.read("run_get", run_id=queued))["status"] == "failed"


async def test_pool_upkeep_replaces_an_idle_run_actor_that_died_unnoticed(host):
    idle = host.run_actors.idle()
    assert idle, "the pool should hold idle RunActors between tests"
    victim = idle[0]
    ray.kill(victim.handle, no_restart=True)  # nothing runs on it: no run will notice

    async def healed() -> bool:
        return (victim not in host.run_actors.members()
                and host.run_actors.size >= host.config.pools.run_actors_min)
    await wait_until(healed, timeout=15.0, interval=0.1)  # upkeep runs every second in these tests
    alive = await asyncio.gather(*(m.handle.ping.remote() for m in host.run_actors.members()))
    assert len(alive) == host.run_actors.size
