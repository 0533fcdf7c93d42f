"""One bench run: a throwaway Postgres database, a fresh local Ray + Serve, the LangGraph peer, the
sections, teardown, and the results document (``bench/report.py``) written with its figure.

Sections (``bench/plan.py``): ``peer`` and ``openloop`` (``sections/compare.py``), ``writes``,
``sweep``, ``capacity``. Conditions recorded for every run: commit and dirty flag, machine load and
other Ray processes at start and end, and — per measured window — the CPU the rest of the machine
used (``foreign_cores_busy``).
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from . import procs
from .cluster import BenchDatabase, Cluster, free_port, log
from .langgraph_server import LangGraphServer
from .measure import NOT_RAY
from .plan import Plan
from .render import print_report, update_readme, write_plot
from .report import assemble_results, git_commit, machine_info, utc_now, write_json
from .sections import Context, capacity, compare, sweep, writes

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


def other_ray_processes() -> dict[str, int]:
    """Ray processes on the whole machine (``ray::`` workers and raylets), for the conditions note."""
    workers = raylets = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmd = procs.cmdline(int(entry.name))
        if cmd.startswith("ray::"):
            workers += 1
        elif "/raylet" in cmd.split(" ", 1)[0]:
            raylets += 1
    return {"ray_worker_processes": workers, "raylets": raylets}


def conditions_now() -> dict[str, Any]:
    import os
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {**other_ray_processes(), "loadavg": load,
            "mem_available_gb": round((procs.mem_available_bytes() or 0) / 2**30, 2)}


def run(plan: Plan, *, command: str, out_dir: Path = BENCH_DIR, readme: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    commit = git_commit(REPO)  # at the start: what was measured
    conditions: dict[str, Any] = {
        "at_start": conditions_now(),
        "load_client": "asyncio httpx in its own process (python -m bench.loadgen) on the same machine",
    }
    sections: dict[str, Any] = {}
    want = set(plan.sections)
    prefix = f"rh-bench-{uuid.uuid4().hex[:6]}"
    log(f"sections {sorted(want)}{' (quick)' if plan.quick_run else ''}; machine: {conditions['at_start']}")
    lg: LangGraphServer | None = None
    with BenchDatabase() as db:
        log(f"database {db.name} migrated")
        cluster = Cluster(prefix, plan.node_run_slots)
        try:
            cluster.start()
            log(f"Ray + Serve up on {cluster.url} ({plan.node_run_slots} run slots declared)")
            ctx = Context(plan=plan, cluster=cluster, db=db)
            if "peer" in want:
                lg = LangGraphServer(free_port())
                lg.start()
                NOT_RAY.add(lg.proc.pid)
                ctx.langgraph = lg
                log(f"LangGraph in-memory server {lg.version} up on {lg.url} (pid {lg.proc.pid})")
            if want & {"peer", "openloop"}:
                sections["compare"] = compare.run(ctx, want & {"peer", "openloop"})
            if lg is not None:
                lg.stop()
                lg = None
            if "writes" in want:
                log("storage writes vs raw asyncpg")
                sections["writes"] = writes.run(ctx)
            if "sweep" in want:
                log("sweep: runner workers × clients, cold and warm")
                sections["sweep"] = sweep.run(ctx)
            if "capacity" in want:
                log("capacity: concurrent 60-second runs")
                sections["capacity"] = capacity.run(ctx)
        finally:
            conditions["at_end"] = conditions_now()
            if lg is not None:
                lg.stop()
            cluster.stop()
            log("Ray and Serve shut down")
    meta = {"date": utc_now(), "command": command, "git_commit": commit["commit"], "git_dirty": commit["dirty"],
            "quick": plan.quick_run, "machine": machine_info(), "conditions": conditions,
            "runtime_s": round(time.monotonic() - started, 1), "config": plan.as_config()}
    results = assemble_results(sections, meta)
    write_json(results, out_dir / "results.json")
    write_plot(results, out_dir / "results.png")
    if readme is not None and update_readme(readme, results):
        log(f"{readme} Performance block regenerated")
    print_report(results)
    log(f"wrote {out_dir / 'results.json'} and results.png in {results['runtime_s']} s")
    return results
