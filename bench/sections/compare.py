"""``peer`` and ``openloop``: RunnerHost on SQLite and on Postgres next to LangGraph's in-memory Agent
Server, same client, same machine, repeated ``plan.reps`` times in a rotating order.

Per repetition and per server: closed loops at ``peer_concurrency`` (C = 4 and 32; 200
conversations round robin), CPU summed over the server's whole process tree — every process of
the Ray session for RunnerHost, the ``langgraph dev`` process tree for the peer. Then, for each
RunnerHost deployment, open-loop arrivals at ``open_fractions`` of the max closed-loop rate it
just sustained (the best of its closed loops), latency counted from each request's scheduled time.
Once per run, the no-op Serve deployment gives the floor Ray Serve itself costs.
"""
from __future__ import annotations

from typing import Any

from ..cluster import BACKENDS, echo_agent, log
from ..measure import Profiler, measured, ray_session_pids
from . import Context

SERVERS = ("langgraph", *BACKENDS)


def closed_spec(ctx: Context, target: str, url: str, concurrency: int, **extra: Any) -> dict[str, Any]:
    plan = ctx.plan
    return {"mode": "closed", "target": target, "url": url, "path": "/v1/events", "agent_id": "echo1",
            "concurrency": concurrency, "warmup_s": plan.warmup_s, "duration_s": plan.duration_s,
            "conversations": plan.conversations, **extra}


def _timeout(spec: dict[str, Any]) -> float:
    return float(spec.get("warmup_s", 0)) + float(spec.get("duration_s", 0)) + 300


def _profiler(ctx: Context, tag: str) -> Profiler | None:
    return Profiler(ctx.plan.profile_dir, tag) if ctx.plan.profile_dir else None


def _brief(result: dict[str, Any]) -> str:
    cpu = result.get("cpu") or {}
    lat = result.get("latency_ms") or {}
    return (f"{result.get('requests_per_s', result.get('completed_per_s'))} runs/s, p50 {lat.get('p50')} ms, "
            f"p99 {lat.get('p99')} ms, errors {result.get('errors')}, "
            f"server CPU {cpu.get('server_ms_per_request')} ms/run, foreign {cpu.get('foreign_cores_busy')} cores")


def langgraph_windows(ctx: Context, rep: int) -> dict[str, Any]:
    lg = ctx.langgraph
    assert lg is not None
    out: dict[str, Any] = {}
    for c in ctx.plan.peer_concurrency:
        spec = closed_spec(ctx, "langgraph", lg.url, c)
        prof = _profiler(ctx, f"langgraph-c{c}-r{rep}") if c == ctx.plan.headline_concurrency else None
        out[str(c)] = measured(spec, lg.pids, timeout=_timeout(spec), profiler=prof)
        log(f"  langgraph C={c}: {_brief(out[str(c)])}")
    return out


def runnerhost_windows(ctx: Context, backend: str, rep: int, want: set[str]) -> dict[str, Any]:
    plan, cluster = ctx.plan, ctx.cluster
    cluster.deploy_runnerhost(backend, f"{backend}-r{rep}", pg_url=ctx.db.url, agents={"echo1": echo_agent()})
    out: dict[str, Any] = {"closed": {}, "open": {}}
    try:
        concurrencies = list(plan.peer_concurrency) if "peer" in want else []
        if "openloop" in want and plan.headline_concurrency not in concurrencies:
            concurrencies.append(plan.headline_concurrency)  # the max rate the open loop is a fraction of
        for c in concurrencies:
            spec = closed_spec(ctx, "runnerhost", cluster.url, c)
            prof = _profiler(ctx, f"{backend}-c{c}-r{rep}") if c == plan.headline_concurrency else None
            out["closed"][str(c)] = measured(spec, ray_session_pids, timeout=_timeout(spec), profiler=prof)
            log(f"  runnerhost/{backend} C={c}: {_brief(out['closed'][str(c)])}")
        if "openloop" in want:
            # the max sustainable closed-loop rate: the best of this deployment's closed loops
            best_c, best = max(out["closed"].items(), key=lambda kv: kv[1]["requests_per_s"] or 0)
            max_rate = best["requests_per_s"]
            out["max_rate"], out["max_rate_concurrency"] = max_rate, int(best_c)
            for fraction in plan.open_fractions:
                if not max_rate:
                    break
                spec = {"mode": "open", "target": "runnerhost", "url": cluster.url, "path": "/v1/events",
                        "agent_id": "echo1", "rate": round(max_rate * fraction, 3), "arrivals": plan.arrivals,
                        "seed": rep * 100 + int(fraction * 100), "warmup_s": plan.open_warmup_s,
                        "duration_s": plan.open_duration_s, "conversations": plan.conversations}
                result = measured(spec, ray_session_pids, timeout=_timeout(spec))
                result["fraction"] = fraction
                out["open"][f"{fraction:g}"] = result
                log(f"  runnerhost/{backend} open loop at {fraction:.0%} of {max_rate} runs/s: "
                    f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms, "
                    f"errors {result['errors']}, send lag p99 {result['send_lag_ms']['p99']} ms")
    finally:
        cluster.delete_runnerhost()
    return out


def noop_window(ctx: Context) -> dict[str, Any]:
    path = ctx.cluster.deploy_noop()
    try:
        spec = {**closed_spec(ctx, "noop", ctx.cluster.url, ctx.plan.headline_concurrency), "path": path}
        result = measured(spec, ray_session_pids, timeout=_timeout(spec))
        log(f"  no-op Serve C={ctx.plan.headline_concurrency}: {_brief(result)}")
        return result
    finally:
        ctx.cluster.delete_noop()


def run(ctx: Context, want: set[str]) -> dict[str, Any]:
    """``want`` ⊆ {"peer", "openloop"}."""
    plan = ctx.plan
    reps: list[dict[str, Any]] = []
    noop = None
    if "peer" in want and plan.noop:
        noop = noop_window(ctx)
    for r in range(1, plan.reps + 1):
        order = list(SERVERS[(r - 1) % 3:] + SERVERS[:(r - 1) % 3])  # rotate: no server always goes first
        if "peer" not in want:
            order.remove("langgraph")
        log(f"repetition {r}/{plan.reps}: {', '.join(order)}")
        rep: dict[str, Any] = {"rep": r, "order": order}
        for server in order:
            if server == "langgraph":
                rep["langgraph"] = langgraph_windows(ctx, r)
            else:
                rep[server] = runnerhost_windows(ctx, server, r, want)
        reps.append(rep)
    lg = ctx.langgraph
    return {"reps": reps, "noop": noop,
            "langgraph_server": ({"command": lg.command, "version": lg.version, "jobs_per_worker": lg.jobs_per_worker}
                                 if lg is not None and "peer" in want else None)}
