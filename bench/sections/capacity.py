"""``capacity`` (issue 10, "Measured in bench/"): how many 60-second runs the host holds at once.

Each run is the echo runner waiting ``hold_s`` (60 s) before it answers, submitted with
``?wait=false``; "running" is counted in the ledger (``agent_run.status``), never by what the
client was told. Memory is PSS from ``/proc/<pid>/smaps_rollup`` (shared pages counted once).

* ``runs_per_actor = 1`` — each run is its own RunActor process. The client keeps a target number
  of runs active (replacing the ones that finish) and raises it one step each time every
  accepted run is running, until ``cap1_max``, the time budget, or the memory reserve (it stops
  *before* free memory would fall below ``max(mem_reserve_fraction × RAM, mem_reserve_min_gb)``).
  Reported: the most runs held at once, refusals, PSS per RunActor, and the memory-bound ceiling
  projected from that PSS and the memory still free at the peak (labelled as a projection).
* ``runs_per_actor = 32`` — ``cap32_runs`` (1,000) submissions arriving at ``cap32_rate`` per
  second (open loop, Poisson: all of them arrive well within ``hold_s``, so all are held at once)
  on a pool pre-warmed to ⌈runs ÷ 32⌉ RunActors: accepted vs refused, ``?wait=false`` answer time
  from each scheduled arrival (p99), the most running at once, PSS of every RunnerHost process at
  that moment, and whether all of them completed. (A closed loop of N connections would report
  N ÷ intake throughput, not the intake's answer time.)

The node declares ``node_run_slots`` ``runnerhost_run_slot`` resources and the pools' maxima
are raised for this section only.
"""
from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from typing import Any

from .. import procs
from ..cluster import asyncpg_dsn, hold_agent, log
from ..loadgen import ledger_counts
from ..measure import ray_session_pids, run_client
from . import Context

MB = 1024 * 1024
GB = 1024 * MB


class MemorySampler:
    """Every ``interval`` s: PSS (and RSS) of each RunActor, PSS of all RunnerHost processes, free RAM."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def sample(self) -> dict[str, Any]:
        run_actors = [pid for pid, name in procs.actor_pids().items() if name == "RunActor"]
        mems = [m for m in (procs.memory_kb(p) for p in run_actors) if m is not None]
        total, count = procs.pss_total(ray_session_pids())
        pss = [m["pss"] * 1024 for m in mems]
        return {"wall": round(time.time(), 2), "run_actors": len(mems),
                "run_actor_pss_mb": _dist([v / MB for v in pss]),
                "run_actor_rss_mb": _dist([m["rss"] * 1024 / MB for m in mems if "rss" in m]),
                "runnerhost_pss_gb": round(total / GB, 3), "runnerhost_processes": count,
                "mem_available_gb": round((procs.mem_available_bytes() or 0) / GB, 2)}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:  # sampling must never take the run down
                log(f"memory sample failed: {type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def nearest(self, wall: float | None) -> dict[str, Any] | None:
        if not self.samples:
            return None
        if wall is None:
            return max(self.samples, key=lambda s: s["runnerhost_pss_gb"])
        return min(self.samples, key=lambda s: abs(s["wall"] - wall))


def _dist(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "n": len(values)}


def reserve_bytes(plan: Any) -> int:
    total = procs.mem_total_bytes() or 0
    return int(max(total * plan.mem_reserve_fraction, plan.mem_reserve_min_gb * GB))


def projected_ceiling(held: int, mem_available: float, reserve: int, pss_per_actor: float | None) -> int | None:
    """Runs (one RunActor each) that fit: those held plus what the memory still free above the
    reserve holds at the measured PSS per RunActor."""
    if not pss_per_actor or pss_per_actor <= 0:
        return None
    return held + max(0, int((mem_available - reserve) // pss_per_actor))


def one_per_actor(ctx: Context) -> dict[str, Any]:
    plan, cluster = ctx.plan, ctx.cluster
    reserve = reserve_bytes(plan)
    pools = {"run_actors_min": 8, "run_actors_max": plan.cap1_max, "runs_per_actor": 1,
             "max_creating": plan.cap1_max_creating, "queue_max": 10_000, "idle_shrink_s": 3600.0,
             "workers_min": 0}
    cluster.deploy_runnerhost("postgres", "cap1", pg_url=ctx.db.url, pools=pools,
                              agents={"hold1": hold_agent(plan.hold_s)})
    try:
        spec = {"mode": "hold", "url": cluster.url, "path": "/v1/events", "agent_id": "hold1",
                "dsn": asyncpg_dsn(ctx.db.url), "step": plan.cap1_step, "max_target": plan.cap1_max,
                "budget_s": plan.cap1_budget_s, "reserve_bytes": reserve, "interval_s": 1.0,
                "drain_timeout_s": plan.hold_s + 90}
        with MemorySampler() as memory:
            held = run_client(spec, timeout=plan.cap1_budget_s + plan.hold_s + 600)
            peak_memory = memory.nearest(held.get("peak_at"))
        samples = memory.samples
    finally:
        cluster.delete_runnerhost()
    pss = ((peak_memory or {}).get("run_actor_pss_mb") or {}).get("median")
    ceiling = projected_ceiling(held["peak_running"], ((peak_memory or {}).get("mem_available_gb") or 0) * GB,
                                reserve, pss * MB if pss else None)
    final = held.get("final_counts") or {}
    return {"runs_per_actor": 1, "goal": plan.cap1_goal, "hold_s": plan.hold_s, "pools": pools,
            "peak_running": held["peak_running"], "refused": held["refused"], "accepted": held["accepted"],
            "stop_reason": held["stop_reason"], "ramp_s": held["ramp_s"], "final_counts": final,
            "all_completed": final.get("completed", 0) == held["accepted"] and held["accepted"] > 0,
            "answer_ms": held["answer_ms"], "memory_at_peak": peak_memory,
            "pss_per_run_actor_mb": pss, "reserve_gb": round(reserve / GB, 2),
            "projected_ceiling": ceiling, "series": held["series"], "memory_series": samples}


def many_per_actor(ctx: Context) -> dict[str, Any]:
    plan, cluster = ctx.plan, ctx.cluster
    runs, per_actor = plan.cap32_runs, plan.cap32_runs_per_actor
    members = math.ceil(runs / per_actor)
    pools = {"run_actors_min": members, "run_actors_max": members, "runs_per_actor": per_actor,
             "max_creating": plan.cap1_max_creating, "queue_max": runs * 2, "idle_shrink_s": 3600.0,
             "workers_min": 0}
    began = time.monotonic()
    cluster.deploy_runnerhost("postgres", "cap32", pg_url=ctx.db.url, pools=pools,
                              agents={"hold32": hold_agent(plan.hold_s)})  # warm: all `members` RunActors
    warm_s = time.monotonic() - began
    dsn = asyncpg_dsn(ctx.db.url)
    try:
        with MemorySampler() as memory:
            spec = {"mode": "submit", "url": cluster.url, "path": "/v1/events", "agent_id": "hold32",
                    "count": runs, "rate": plan.cap32_rate, "arrivals": "poisson", "seed": 32,
                    "prefix": "cap32"}
            submitted = run_client(spec, timeout=600)
            peak, peak_at, final = asyncio.run(_watch(dsn, "hold32", submitted["accepted"], plan.hold_s))
            peak_memory = memory.nearest(peak_at)
        samples = memory.samples
    finally:
        cluster.delete_runnerhost()
    return {"runs_per_actor": per_actor, "runs": runs, "run_actors": members, "hold_s": plan.hold_s,
            "pools": pools, "pool_warm_s": round(warm_s, 1), "submit": submitted, "peak_running": peak,
            "final_counts": final,
            "all_completed": final.get("completed", 0) == submitted["accepted"] and submitted["accepted"] > 0,
            "memory_at_peak": peak_memory,
            "runnerhost_pss_gb": (peak_memory or {}).get("runnerhost_pss_gb"),
            "pss_per_run_actor_mb": ((peak_memory or {}).get("run_actor_pss_mb") or {}).get("median"),
            "memory_series": samples}


async def _watch(dsn: str, agent_id: str, accepted: int, hold_s: float) -> tuple[int, float | None, dict[str, int]]:
    """Peak of running runs while they are held, then wait until all have ended."""
    import asyncpg
    conn = await asyncpg.connect(dsn)
    peak, peak_at = 0, None
    try:
        deadline = time.monotonic() + hold_s + 120
        while True:
            counts = await ledger_counts(conn, agent_id)
            running = counts.get("running", 0)
            if running > peak:
                peak, peak_at = running, time.time()
            if counts.get("running", 0) + counts.get("created", 0) == 0 and sum(counts.values()) >= accepted:
                return peak, peak_at, counts
            if time.monotonic() > deadline:
                return peak, peak_at, counts
            await asyncio.sleep(1.0)
    finally:
        await conn.close()


def run(ctx: Context) -> dict[str, Any]:
    log(f"  runs_per_actor=1: ramping {ctx.plan.hold_s:g}-second runs by {ctx.plan.cap1_step} "
        f"(goal {ctx.plan.cap1_goal}, at most {ctx.plan.cap1_max})")
    one = one_per_actor(ctx)
    log(f"  runs_per_actor=1: {one['peak_running']} held at once ({one['stop_reason']}), refused {one['refused']}, "
        f"PSS/RunActor {one['pss_per_run_actor_mb']} MB, projected ceiling {one['projected_ceiling']}")
    many = many_per_actor(ctx)
    log(f"  runs_per_actor={many['runs_per_actor']}: {many['peak_running']} of {many['runs']} running at once, "
        f"refused {many['submit']['refused']}, ?wait=false p99 {many['submit']['answer_ms']['p99']} ms, "
        f"RunnerHost PSS {many['runnerhost_pss_gb']} GB")
    return {"one_per_actor": one, "many_per_actor": many}
