"""500 events over 50 conversations through the actor layer (no HTTP), counted in Postgres."""
from __future__ import annotations

import asyncio
import statistics
import time

import asyncpg
import pytest

from tests.actors.helpers import collect, message

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://")


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
    assert host.run_actors.leased() == 0 and not host.live  # every run gave its slot back
    latencies.sort()
    print(f"\n500 echo runs via the actor layer: {500 / elapsed:.1f} runs/s, "
          f"p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {latencies[494] * 1000:.0f} ms, "
          f"RunActor pool peak {host.run_actors.peak_size}/{host.config.pools.run_actors_max}")
