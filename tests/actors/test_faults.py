"""Killing actors mid-run, through real Ray and Postgres; each fault is shown to have hit.

The tests kill actors, so they run against a host of their own (its own namespace: its own
storage, registry and provider actors and pools) — no other test depends on what they kill.
They pass in any order, alone or together: each starts by waiting until the host is whole
again (:func:`healthy`: every pool at its minimum, every member answering — whatever an
earlier test killed has been replaced), picks its own victims, and ends by showing that the
host recovered (:func:`recovered`: nothing leaked, a fresh run completes). A fault is injected
only once the scenario it needs is observed (the run has streamed a delta; a storage write is
blocked inside its transaction), and the test asserts the fault's effect, so it fails — never
passes by luck — when the scenario did not happen.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
import ray

from actors import constants
from actors.host import Host
from actors.host_config import HostConfig, PoolConfig, StorageConfig
from tests.actors.conftest import AGENTS
from tests.actors.helpers import collect, message, until_delta, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def dsn(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def fault_host(ray_session, pg_url, tmp_path_factory):
    config = HostConfig(
        namespace=f"rh-faults-{uuid.uuid4().hex[:8]}",
        storage=StorageConfig(database_url=pg_url, artifact_root=str(tmp_path_factory.mktemp("fault-artifacts"))),
        pools=PoolConfig(run_actors_min=3, run_actors_max=8, workers_min=1, workers_max=2, health_check_s=0.5),
        stale_run_check_s=0.5, agents=AGENTS)
    host = await Host.start(config)
    yield host
    await host.close()
    for actor in (host.storage, host.registry, host.providers):
        ray.kill(actor, no_restart=True)


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


async def run_actor_of(host: Host, run_id: str):
    run = host.live[run_id]
    assert run.member is not None, "the run holds no RunActor"
    return run.member


async def settled(host: Host) -> None:
    async def idle() -> bool:
        lanes = await host.registry.lanes.remote()
        return not host.live and host.run_actors.leased() == 0 and not [
            lane for lane in lanes if lane["host_id"] == host.host_id]
    await wait_until(idle, timeout=15, what="the host to hold no run, lease or lane")


def pools(host: Host) -> list:
    return [host.run_actors, *host.worker_pools.values()]


async def healthy(host: Host) -> None:
    """Every pool at its minimum and every member (and the storage actor) answering a ping: what
    an earlier test killed has been replaced (pool upkeep runs twice a second here)."""
    async def whole() -> bool:
        if any(pool.size < pool.min_size for pool in pools(host)):
            return False
        members = [m for pool in pools(host) for m in pool.members()]
        try:
            await asyncio.wait_for(asyncio.gather(host.storage.ready.remote(),
                                                  *(m.handle.ping.remote() for m in members)), 10)
        except (ray.exceptions.RayActorError, asyncio.TimeoutError):
            return False
        return True
    await wait_until(whole, timeout=30, interval=0.1,
                     what=lambda: f"the fault host's pools to be whole: {[p.stats() for p in pools(host)]}")
    await settled(host)


async def recovered(host: Host) -> None:
    """After a fault: nothing leaked, nobody waits for a slot, and a fresh run completes promptly."""
    await settled(host)
    assert host.run_actors.waiting == 0
    started = time.monotonic()
    frames = await collect(await host.submit(message(f"c-{uuid.uuid4().hex[:8]}", "fine"), "echo"))
    assert frames[-1]["type"] == "run.completed" and time.monotonic() - started < 30, frames[-1]
    await settled(host)


async def test_killing_a_run_actor_mid_run_records_a_retryable_failure(fault_host, conv, pg_url):
    host = fault_host
    await healthy(host)
    stream = await host.submit(message(conv, "w " * 20), "slow")
    seen = await until_delta(stream)
    victim = await run_actor_of(host, seen[0]["run_id"])
    ray.kill(victim.handle, no_restart=True)
    frames = seen + await collect(stream)
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["retryable"] is True
    assert frames[-1]["data"]["code"] == "host.run_actor_died"
    assert victim not in host.run_actors.members()  # the dead one left the pool
    run = await host.read("run_get", run_id=seen[0]["run_id"])
    assert run["status"] == "failed"
    ledger = await host.read("run_events_page", run_id=seen[0]["run_id"], limit=100)
    assert [e["sequence"] for e in ledger["items"]] == [f["sequence"] for f in frames]  # what the client saw
    later = await collect(await host.submit(message(conv, "again"), "echo"))
    assert later[-1]["type"] == "run.completed"
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (2, 2, 0)
    await recovered(host)


async def test_killing_a_runner_worker_mid_run_records_a_retryable_failure(fault_host, conv, pg_url):
    host = fault_host
    await healthy(host)
    await host.put_agent("slow-pooled", AGENTS["slow"].model_copy(update={"execution": "pool"}))
    stream = await host.submit(message(conv, "w " * 20), "slow-pooled")
    seen = await until_delta(stream)
    workers = host.worker_pools["plugin:builtin/echo/default"].members()
    assert workers
    for worker in workers:
        ray.kill(worker.handle, no_restart=True)
    frames = seen + await collect(stream)
    assert frames[-1]["type"] == "run.failed"
    assert frames[-1]["data"]["code"] == "runner.crashed" and frames[-1]["data"]["retryable"] is True
    later = await collect(await host.submit(message(conv, "again"), "slow-pooled"))
    assert later[-1]["type"] == "run.completed"  # the pool replaced the dead worker
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (2, 2, 0)
    await recovered(host)


async def test_killing_the_storage_actor_with_a_write_in_flight_loses_and_duplicates_nothing(
        fault_host, conv, pg_url):
    """A row lock held from outside makes the run's final write block inside its transaction; the
    storage actor is killed while pg_stat_activity shows that write waiting — provably in flight."""
    host = fault_host
    await healthy(host)
    frames = await collect(await host.submit(message(conv, "first"), "echo"))  # the counter row exists
    assert frames[-1]["type"] == "run.completed"
    lock = await asyncpg.connect(dsn(pg_url))
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("select * from transcript_counter where conversation_id=$1 for update", conv)

        async def submit_and_read() -> list[dict]:  # its accept waits for the counter row
            return await collect(await host.submit(message(conv, "w w w"), "slow"))
        waiting = asyncio.create_task(submit_and_read())

        async def blocked() -> bool:
            return bool(await lock.fetchval(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' "
                "and datname = current_database() and pid <> pg_backend_pid()"))
        assert (await host.storage.stats.remote())["restarted"] is False, \
            "the storage actor was restarted before: its restart below could not be told apart"
        await wait_until(blocked, timeout=15, what="the run's accept to wait on the row lock")
        assert not waiting.done()  # the client has no answer yet: nothing was accepted
        ray.kill(host.storage, no_restart=False)  # it restarts; the host retries its idempotent write

        async def restarted() -> bool:  # the new incarnation answers: the killed one, and its write, are gone
            try:
                return (await asyncio.wait_for(host.storage.stats.remote(), 10))["restarted"]
            except asyncio.TimeoutError:
                return False
        await wait_until(restarted, timeout=60, interval=0.1, what="the killed storage actor to restart")
        await tx.rollback()
    finally:
        await lock.close()
    frames = await asyncio.wait_for(waiting, 90)
    assert frames[-1]["type"] == "run.completed", frames[-1]
    later = await collect(await host.submit(message(conv, "after restart"), "echo"))
    assert later[-1]["type"] == "run.completed"
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["transcript"], c["dup_events"]) == (3, 3, 6, 0)
    await recovered(host)


async def test_dead_idle_run_actors_are_replaced_before_a_run_starts(fault_host, conv, pg_url, monkeypatch):
    """A RunActor silent for longer than EXECUTOR_RECHECK_S is pinged before a run is handed to
    it (here: every one, as if all had been idle that long); a dead one is replaced and the run
    starts on a live one — it never reached the dead one, so it is not a second execution."""
    host = fault_host
    await healthy(host)
    monkeypatch.setattr(constants, "EXECUTOR_RECHECK_S", 0.0)
    for actor in host.run_actors.members():  # e.g. their node was lost while they were idle
        ray.kill(actor.handle, no_restart=True)
    frames = await collect(await host.submit(message(conv, "still served"), "echo"))
    assert frames[-1]["type"] == "run.completed", frames[-1]
    assert [f["type"] for f in frames].count("run.started") == 1
    c = await counts(pg_url, conv)
    assert (c["events"], c["runs"], c["dup_events"]) == (1, 1, 0)
    await recovered(host)


async def test_pool_upkeep_replaces_an_idle_run_actor_that_died_unnoticed(fault_host):
    host = fault_host
    await healthy(host)
    victim = (await wait_until(host.run_actors.idle, timeout=15, what="an idle RunActor"))[0]
    ray.kill(victim.handle, no_restart=True)  # nothing runs on it: no run will notice

    async def healed() -> bool:
        return (victim not in host.run_actors.members()
                and host.run_actors.size >= host.config.pools.run_actors_min)
    await wait_until(healed, timeout=15.0, interval=0.1,  # upkeep runs twice a second here
                     what="pool upkeep to replace the idle RunActor killed behind its back")
    alive = await asyncio.gather(*(m.handle.ping.remote() for m in host.run_actors.members()))
    assert len(alive) == host.run_actors.size
    await recovered(host)


async def test_the_sweep_finalizes_runs_of_a_gone_host_and_releases_its_lanes(fault_host, conv, pg_url):
    """What a SIGKILLed host leaves: a running and a queued run on record, lanes in the registry."""
    host = fault_host
    await healthy(host)
    gone = f"host_gone_{uuid.uuid4().hex[:8]}"
    await host.ports.write("host_heartbeat", host_id=gone)
    conn = await asyncpg.connect(dsn(pg_url))
    try:  # its last heartbeat was long ago (every other host would see it as gone too)
        await conn.execute("update runnerhost_host set heartbeat_at = heartbeat_at - 3600 where host_id = $1", gone)
    finally:
        await conn.close()
    ids = []
    for status, text in (("running", "lost"), ("created", "waiting")):
        run_id = f"run_{uuid.uuid4().hex}"
        event = message(conv, text)
        admitted = await host.ports.registry("admit", run_id=run_id, agent_id="enqueue",
                                             event={"event_id": event.event_id, "event_type": event.event_type,
                                                    "conversation_id": conv}, host_id=gone)
        assert admitted["decision"] in ("start", "queue")
        await host.ports.write("run_accept", run_id=run_id, event=event, agent_id="enqueue",
                               binding_id=admitted["binding_id"], runner_id="plugin:builtin/echo/default",
                               deadline_at=None, scope_keys={}, status=status, owner_host=gone,
                               frames=[{"run_id": run_id, "type": "run.queued", "data": {}, "sequence": 0}])
        ids.append(run_id)
    blocked = await host.submit(message(conv, "behind them"), "enqueue")  # waits for the gone host's lane
    first = await blocked.__anext__()
    assert first["type"] == "run.queued" and set(first["data"]["behind"]) == set(ids)

    async def finalized() -> bool:
        statuses = [(await host.read("run_get", run_id=r))["status"] for r in ids]
        return statuses == ["failed", "failed"]
    await wait_until(finalized, timeout=20, interval=0.25,  # swept every 0.5 s here
                     what="the sweep to fail the gone host's runs")
    for run_id in ids:
        run = await host.read("run_get", run_id=run_id)
        assert run["status_reason"] == "host.lost"
    rest = await asyncio.wait_for(collect(blocked), 60)  # the lanes were released: it ran
    assert rest[-1]["type"] == "run.completed"
    await recovered(host)
