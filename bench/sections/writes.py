"""``writes``: the StorageActor's ``write("run_events")`` against raw asyncpg doing the same work.

Honest by construction:

* **same statement** — the raw side executes the ledger's own bulk insert
  (``store.ledger._PG_BULK_EVENTS``: one ``unnest`` of five arrays, ``EXISTS`` on the run,
  ``ON CONFLICT DO NOTHING``), compiled for asyncpg, each ``data`` JSON-encoded by the store's
  encoder inside the timed loop as the actor does;
* **same batch size** — the raw side commits exactly as many rows per transaction as the actor's
  group commit did in the variant it is compared with (rows read back ÷ the actor's batches);
* **counted by reading back** — both sides' rows are ``count(*)`` of ``agent_run_event`` for the
  variant's runs after the window, not what the calls returned (a mismatch is reported);
* **the realistic size is the headline** — 4 frames per call, what a 1-chunk echo run writes
  (``run.started``, the delta, ``message.completed``, ``run.completed``), repeated ``reps``
  times; 1, 8 and 64 frames per call are reported beside it;
* **the host's path beside it** — the same 4-frame ops sent as a host sends its runs' writes
  (coalesced into ``write_many`` messages, two in flight), against raw at that path's rows per
  commit: what the actor costs when one message carries many runs' ops.

The actor is driven from the bench's driver process with ``write_concurrency`` calls in flight.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

from ..cluster import ECHO, asyncpg_dsn, log
from ..measure import Profiler
from ..stats import ratio
from . import Context

FrameList = list[dict[str, Any]]


def echo_run_frames(seq0: int) -> FrameList:
    """What a 1-chunk echo run puts on record, in one call."""
    kinds = [("run.started", {"runner_id": ECHO, "binding_id": "bench-binding", "agent_id": "echo1",
                              "event_id": f"evt_{seq0:08d}"}),
             ("message.delta", {"chunk": {"role": "assistant", "content": "echo: hello"}}),
             ("message.completed", {"message": {"role": "assistant", "content": "echo: hello"}, "file_ids": []}),
             ("run.completed", {"finish_reason": "stop"})]
    return [{"sequence": seq0 + i, "type": t, "data": d} for i, (t, d) in enumerate(kinds)]


def call_frames(per_call: int, seq0: int) -> FrameList:
    if per_call == 4:
        return echo_run_frames(seq0)
    return [{"sequence": seq0 + i, "type": "message.delta",
             "data": {"chunk": {"role": "assistant", "content": f"bench delta {seq0 + i}"}}}
            for i in range(per_call)]


def plan_calls(run_ids: list[str], rows: int, per_call: int) -> list[tuple[str, FrameList]]:
    """``rows // per_call`` calls, round robin over the runs, each run's sequences consecutive."""
    next_seq = {r: 0 for r in run_ids}
    calls = []
    for i in range(rows // per_call):
        run_id = run_ids[i % len(run_ids)]
        calls.append((run_id, call_frames(per_call, next_seq[run_id])))
        next_seq[run_id] += per_call
    return calls


async def drive(calls: list[tuple[str, FrameList]], write: Callable[[str, FrameList], Awaitable[int]],
                concurrency: int, max_seconds: float) -> tuple[int, int, float]:
    """``concurrency`` writers take calls off one list until it is empty or ``max_seconds`` have
    passed (no new call starts after that; the ones in flight are waited for).
    Returns (calls made, rows acknowledged, seconds)."""
    it = iter(calls)
    made = acked = 0
    t0 = time.perf_counter()
    deadline = t0 + max_seconds

    async def writer() -> None:
        nonlocal made, acked
        for run_id, frames in it:
            if time.perf_counter() > deadline:
                return
            made += 1
            n = await write(run_id, frames)
            acked += n

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return made, acked, time.perf_counter() - t0


async def seed_runs(dsn: str, run_ids: list[str]) -> None:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        now = time.time()
        await conn.executemany(
            "INSERT INTO agent_run (run_id, status, created_at, updated_at, metadata_json, runner_id, agent_id) "
            "VALUES ($1, 'running', $2, $2, '{}'::jsonb, $3, 'bench-writes')",
            [(r, now, ECHO) for r in run_ids])
    finally:
        await conn.close()


async def rows_on_record(dsn: str, run_ids: list[str]) -> int:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM agent_run_event WHERE run_id = ANY($1::text[])",
                                       run_ids))
    finally:
        await conn.close()


def raw_statement() -> tuple[str, list[str]]:
    """The ledger's bulk run-event insert as asyncpg SQL, and its parameters' order."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect
    try:
        from store.ledger import _PG_BULK_EVENTS
    except ImportError as exc:  # the store changed: the baseline must follow it, not drift from it
        raise RuntimeError("store.ledger no longer has _PG_BULK_EVENTS: point bench/sections/writes.py "
                           "at the ledger's run-event statement") from exc
    compiled = _PG_BULK_EVENTS.compile(dialect=dialect())
    return str(compiled), list(compiled.positiontup or [])


async def actor_variant(storage: Any, dsn: str, run_ids: list[str], per_call: int, plan: Any) -> dict[str, Any]:
    from actors.retry import unwrap
    calls = plan_calls(run_ids, plan.write_max_rows - plan.write_max_rows % per_call, per_call)

    async def write(run_id: str, frames: FrameList) -> int:
        return unwrap(await storage.write.remote("run_events", {"run_id": run_id, "frames": frames}))

    before = await storage.stats.remote()
    made, acked, elapsed = await drive(calls, write, plan.write_concurrency, plan.write_max_s)
    after = await storage.stats.remote()
    rows = await rows_on_record(dsn, run_ids)
    batches = after["batches"] - before["batches"]
    return {"frames_per_call": per_call, "calls": made, "rows": rows, "rows_acknowledged": acked,
            "readback_matches": rows == made * per_call, "seconds": round(elapsed, 3),
            "rows_per_s": round(rows / elapsed, 1), "calls_per_s": round(made / elapsed, 1),
            "batches": batches, "rows_per_commit": round(rows / batches, 1) if batches else None}


async def host_path_variant(storage: Any, dsn: str, run_ids: list[str], per_call: int, plan: Any) -> dict[str, Any]:
    """The same ops as :func:`actor_variant`, sent the way a host sends them: through the host's
    :class:`~actors.core.coalesce.Coalescer` into ``write_many`` (ops of concurrent runs share a
    message, at most two messages in flight) — what one ingress replica's runs cost the actor."""
    from actors.core.coalesce import Coalescer
    from actors.retry import unwrap
    calls = plan_calls(run_ids, plan.write_max_rows - plan.write_max_rows % per_call, per_call)

    async def send(ops: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return await storage.write_many.remote(ops)

    coalescer: Coalescer = Coalescer(send, name="bench writes", max_inflight=2)

    async def write(run_id: str, frames: FrameList) -> int:
        return unwrap(await coalescer.call(("run_events", {"run_id": run_id, "frames": frames})))

    before = await storage.stats.remote()
    made, acked, elapsed = await drive(calls, write, plan.write_concurrency, plan.write_max_s)
    after = await storage.stats.remote()
    rows = await rows_on_record(dsn, run_ids)
    batches = after["batches"] - before["batches"]
    return {"frames_per_op": per_call, "ops": made, "messages": coalescer.batches, "rows": rows,
            "readback_matches": rows == made * per_call, "seconds": round(elapsed, 3),
            "rows_per_s": round(rows / elapsed, 1), "ops_per_message": round(made / coalescer.batches, 1)
            if coalescer.batches else None, "rows_per_commit": round(rows / batches, 1) if batches else None}


async def raw_variant(dsn: str, run_ids: list[str], per_call: int, rows: int, rows_per_commit: float,
                      max_seconds: float) -> dict[str, Any]:
    """The same rows (same frames, same runs) through the ledger's statement on one asyncpg
    connection, ``rows_per_commit`` rows per transaction."""
    import asyncpg
    from store._common import encode_json
    sql, order = raw_statement()
    flat = [(run_id, f) for run_id, frames in plan_calls(run_ids, rows, per_call) for f in frames]
    batch = max(1, round(rows_per_commit))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT 1")
        t0 = time.perf_counter()
        deadline = t0 + max_seconds
        for i in range(0, len(flat), batch):
            if time.perf_counter() > deadline:
                break
            chunk = flat[i:i + batch]
            stamp = time.time()
            params = {"run_ids": [r for r, _ in chunk], "sequences": [f["sequence"] for _, f in chunk],
                      "types": [f["type"] for _, f in chunk],
                      "datas": [encode_json(f["data"], field="run event data") for _, f in chunk],
                      "stamps": [stamp] * len(chunk)}
            async with conn.transaction():
                await conn.execute(sql, *(params[name] for name in order))
        elapsed = time.perf_counter() - t0
    finally:
        await conn.close()
    on_record = await rows_on_record(dsn, run_ids)
    return {"frames_per_call": per_call, "rows": on_record, "seconds": round(elapsed, 3),
            "rows_per_s": round(on_record / elapsed, 1), "rows_per_commit": batch}


async def actor_noop_calls(storage: Any, calls: int, concurrency: int) -> dict[str, Any]:
    """``StorageActor.stats()`` (no database) back to back: the ceiling of calls/s into that actor."""
    remaining = calls

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await storage.stats.remote()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"calls": calls, "seconds": round(elapsed, 3), "calls_per_s": round(calls / elapsed, 1)}


def run(ctx: Context) -> dict[str, Any]:
    import ray
    from actors.host_config import StorageConfig
    from actors.storage_actor import ensure_storage
    from .. import procs
    plan, cluster = ctx.plan, ctx.cluster
    dsn = asyncpg_dsn(ctx.db.url)
    namespace = f"{cluster.prefix}-writes"
    cluster.namespaces.append(namespace)
    config = StorageConfig(database_url=ctx.db.url, artifact_root=str(Path(cluster.data_root) / "writes-artifacts"))
    storage = asyncio.run(ensure_storage(config, namespace=namespace))
    ray.get(storage.ready.remote())
    tag = uuid.uuid4().hex[:6]
    variants: list[tuple[int, int]] = []  # (frames per call, repetition)
    for k in plan.write_frames_per_call:
        reps = plan.reps if k == plan.write_headline_frames else 1
        variants += [(k, r) for r in range(1, reps + 1)]
    groups = {f"{k}-{r}": [f"run_bw{tag}_{k}_{r}_{i}" for i in range(plan.write_runs)] for k, r in variants}
    groups["warm"] = [f"run_bw{tag}_warm_{i}" for i in range(plan.write_runs)]

    async def go() -> dict[str, Any]:
        await seed_runs(dsn, [r for ids in groups.values() for r in ids])
        await actor_variant(storage, dsn, groups["warm"], 1, plan)  # warmup: connections, code paths
        pid = next((p for p, name in procs.actor_pids().items() if name == "StorageActor"), None)
        out = []
        for k, r in variants:
            ids = groups[f"{k}-{r}"]
            profiler = Profiler(plan.profile_dir, f"writes{k}-r{r}") if plan.profile_dir and pid else None
            if profiler is not None:
                profiler.record({"StorageActor": pid})
            actor = await actor_variant(storage, dsn, ids, k, plan)
            if profiler is not None:
                profiler.stop()
            # the raw side writes the same rows into a fresh copy of the runs (its own run ids)
            raw_ids = [f"{i}_raw" for i in ids]
            await seed_runs(dsn, raw_ids)
            raw = await raw_variant(dsn, raw_ids, k, actor["rows"], actor["rows_per_commit"] or 1,
                                    plan.write_max_s * 4)
            entry = {"frames_per_call": k, "rep": r, "actor": actor, "raw": raw,
                     "vs_raw": ratio(actor["rows_per_s"], raw["rows_per_s"])}
            out.append(entry)
            log(f"  {k} frame(s)/call (rep {r}): actor {actor['rows_per_s']} rows/s "
                f"({actor['rows_per_commit']} rows/commit, read back {actor['rows']} of {actor['calls'] * k}), "
                f"raw {raw['rows_per_s']} rows/s → {entry['vs_raw']}")
        # the headline's ops again, as a host sends them, against raw at that path's rows per commit
        k = plan.write_headline_frames
        ids = [f"run_bw{tag}_host_{i}" for i in range(plan.write_runs)]
        await seed_runs(dsn, ids)
        host = await host_path_variant(storage, dsn, ids, k, plan)
        raw_ids = [f"{i}_raw" for i in ids]
        await seed_runs(dsn, raw_ids)
        raw = await raw_variant(dsn, raw_ids, k, host["rows"], host["rows_per_commit"] or 1, plan.write_max_s * 4)
        host_path = {"frames_per_op": k, "host": host, "raw": raw, "vs_raw": ratio(host["rows_per_s"], raw["rows_per_s"])}
        log(f"  {k} frame(s)/op, coalesced as a host sends them ({host['ops_per_message']} ops/message): "
            f"{host['rows_per_s']} rows/s, raw {raw['rows_per_s']} rows/s → {host_path['vs_raw']}")
        noop = await actor_noop_calls(storage, 2000 if not plan.quick_run else 300, plan.write_concurrency)
        return {"variants": out, "host_path": host_path, "actor_noop_calls": noop}

    try:
        result = asyncio.run(go())
    finally:
        ray.kill(storage, no_restart=True)
    result.update(headline_frames_per_call=plan.write_headline_frames, concurrency=plan.write_concurrency,
                  max_batch=config.max_batch, max_delay_ms=config.max_delay_ms, statement=raw_statement()[0],
                  note=("StorageActor.write('run_events', {run_id, frames}) from the driver with "
                        f"{plan.write_concurrency} calls in flight; raw = one asyncpg connection executing the "
                        "ledger's own unnest statement at the actor's measured rows per commit; both sides "
                        "counted by reading agent_run_event back"))
    return result
