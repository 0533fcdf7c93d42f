"""``sweep`` (issue 10, Deliver 6): throughput by runner workers and clients, on a cold and a warm server.

For each number of runner workers W (``workers_min = workers_max = W``; the agent ``echo1_pool``
runs the echo runner on the worker pool, ``execution = "pool"``) and each client count C, a
freshly deployed server (Postgres) is measured twice:

* **cold** — the first request arrives the moment the deployment answers ``/healthz`` (the pool
  still warming in the background), no priming, measured from that request on;
* **warm** — the same server right after: one priming burst, a warmup, then the window.

``/v1/health`` is sampled during both windows: the RunActor pool's size, leased slots, creations
in flight and queue over time. The report checks that throughput rises or stays flat with C
(never collapses), that a cold server is not far behind its warm self, and that the pool never
grows past what the clients can use.
"""
from __future__ import annotations

from typing import Any

from ..cluster import log, pool_echo_agent
from ..measure import measured, ray_session_pids
from . import Context


def run(ctx: Context) -> dict[str, Any]:
    from actors.host_config import PoolConfig
    plan, cluster = ctx.plan, ctx.cluster
    defaults = PoolConfig()
    points: list[dict[str, Any]] = []
    for w in plan.sweep_workers:
        for c in plan.sweep_concurrency:
            pools = {"workers_min": w, "workers_max": w}
            cluster.deploy_runnerhost("postgres", f"sweep-w{w}-c{c}", pg_url=ctx.db.url, pools=pools,
                                      agents={"echo1_pool": pool_echo_agent()}, warm=False)
            point: dict[str, Any] = {"workers": w, "concurrency": c}
            try:
                base = {"target": "runnerhost", "url": cluster.url, "path": "/v1/events", "agent_id": "echo1_pool",
                        "concurrency": c, "conversations": plan.conversations, "health_path": "/v1/health",
                        "health_interval_s": plan.health_interval_s}
                cold = {"mode": "closed", **base, "prime": False, "warmup_s": 0, "duration_s": plan.sweep_cold_s}
                point["cold"] = measured(cold, ray_session_pids, timeout=plan.sweep_cold_s + 300, quiet_first=False)
                warm = {"mode": "closed", **base, "prime": True, "warmup_s": plan.sweep_warmup_s,
                        "duration_s": plan.sweep_warm_s}
                point["warm"] = measured(warm, ray_session_pids, timeout=plan.sweep_warmup_s + plan.sweep_warm_s + 300)
            finally:
                cluster.delete_runnerhost()
            for phase in ("cold", "warm"):
                r = point[phase]
                series = r.get("pool_series") or []
                log(f"  workers={w} C={c} {phase}: {r['requests_per_s']} runs/s, p99 {r['latency_ms']['p99']} ms, "
                    f"errors {r['errors']}, RunActors {series[0]['size'] if series else '?'}→"
                    f"{max((p['size'] or 0) for p in series) if series else '?'}")
            points.append(point)
    return {"points": points, "run_actors_min": defaults.run_actors_min, "run_actors_max": defaults.run_actors_max,
            "agent": "echo1_pool (1-chunk echo, execution = pool)", "backend": "postgres"}
