"""Result assembly and target verdicts (pure: no Ray, no I/O but the writers at the end).

``assemble_results(sections, meta)`` turns the raw section documents of one bench run into the
``bench/results.json`` document. Every headline number and every verdict is *computed* here from
the section data — medians over the repetitions with their min/max — never typed in.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from .stats import ratio, spread

BACKENDS = ("sqlite", "postgres")
#: A point of a sweep series below this share of the best point at fewer clients is a collapse.
COLLAPSE_SHARE = 0.7
#: A cold server below this share of its warm self (same workers, same clients) is a collapse.
COLD_SHARE = 0.5


# -- provenance ----------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / (1024 * 1024), 1)
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cores": os.cpu_count(), "ram_gb": ram_gb, "cpu_model": cpu,
                            "os": platform.platform(), "python": platform.python_version()}
    try:
        import ray
        info["ray"] = ray.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def git_commit(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    cwd = str(repo or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(dirty)}


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _get(d: Any, *path: Any) -> Any:
    cur = d
    for key in path:
        if isinstance(cur, Mapping) and key in cur:
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int) and -len(cur) <= key < len(cur):
            cur = cur[key]
        else:
            return None
    return cur


def _median(s: Mapping[str, Any] | None) -> Any:
    return None if s is None else s.get("median")


# -- peer and open loop --------------------------------------------------------------------------
def peer_summary(compare: Mapping[str, Any] | None, headline_c: int = 32) -> dict[str, Any] | None:
    """Per server and client count: runs/s, p50/p99, CPU per run (spread over the repetitions);
    per backend: the ratio to LangGraph in the *same* repetition."""
    if not compare or not compare.get("reps"):
        return None
    reps = compare["reps"]
    concurrencies = sorted({int(c) for rep in reps for server in ("langgraph", *BACKENDS)
                            for c in ((_get(rep, server, "closed") if server != "langgraph" else rep.get(server)) or {})})
    servers: dict[str, Any] = {}
    for server in ("langgraph", *BACKENDS):
        by_c = {}
        for c in concurrencies:
            windows = [_window(rep, server, c) for rep in reps]
            windows = [w for w in windows if w is not None]
            if not windows:
                continue
            by_c[str(c)] = {
                "runs_per_s": spread(w.get("requests_per_s") for w in windows),
                "p50_ms": spread(_get(w, "latency_ms", "p50") for w in windows),
                "p99_ms": spread(_get(w, "latency_ms", "p99") for w in windows),
                "cpu_per_run_ms": spread(_get(w, "cpu", "server_ms_per_request") for w in windows),
                "idle_cpu_per_run_ms": spread(_get(w, "cpu", "idle_ms_per_request") for w in windows),
                "client_cpu_per_run_ms": spread(_get(w, "cpu", "client_ms_per_request") for w in windows),
                "foreign_cores_busy": spread(_get(w, "cpu", "foreign_cores_busy") for w in windows),
                "errors": sum(int(w.get("errors") or 0) for w in windows),
                "completed": sum(int(w.get("completed") or 0) for w in windows),
                "by_process_ms": _by_process([_get(w, "cpu", "ms_per_request_by_process") for w in windows]),
            }
        if by_c:
            servers[server] = by_c
    ratios: dict[str, Any] = {}
    for backend in BACKENDS:
        per_c = {}
        for c in concurrencies:
            values = [ratio(_get(_window(rep, backend, c), "requests_per_s"),
                            _get(_window(rep, "langgraph", c), "requests_per_s")) for rep in reps]
            s = spread(values)
            if s is not None:
                per_c[str(c)] = s
        if per_c:
            ratios[backend] = per_c
    return {"servers": servers, "langgraph_ratio": ratios, "reps": len(reps), "headline_concurrency": headline_c,
            "noop": _noop(compare.get("noop"))}


def _window(rep: Mapping[str, Any], server: str, c: int) -> Mapping[str, Any] | None:
    if server == "langgraph":
        return _get(rep, "langgraph", str(c))
    return _get(rep, server, "closed", str(c))


def _by_process(maps: list[Mapping[str, float] | None]) -> dict[str, float]:
    """Median per process label of CPU ms per run over the repetitions (busiest first)."""
    labels: dict[str, list[float]] = {}
    for m in maps:
        for label, v in (m or {}).items():
            labels.setdefault(label, []).append(float(v))
    out = {label: _median(spread(vs)) for label, vs in labels.items()}
    return dict(sorted(out.items(), key=lambda kv: -(kv[1] or 0)))


def _noop(noop: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not noop:
        return None
    return {"requests_per_s": noop.get("requests_per_s"), "p99_ms": _get(noop, "latency_ms", "p99"),
            "cpu_per_request_ms": _get(noop, "cpu", "server_ms_per_request"), "errors": noop.get("errors"),
            "concurrency": noop.get("concurrency")}


def openloop_summary(compare: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not compare or not compare.get("reps"):
        return None
    out: dict[str, Any] = {}
    for backend in BACKENDS:
        fractions: dict[str, Any] = {}
        keys = sorted({k for rep in compare["reps"] for k in (_get(rep, backend, "open") or {})}, key=float)
        for key in keys:
            windows = [w for w in (_get(rep, backend, "open", key) for rep in compare["reps"]) if w]
            fractions[key] = {
                "offered_rate": spread(w.get("offered_rate") for w in windows),
                "completed_per_s": spread(w.get("completed_per_s") for w in windows),
                "p50_ms": spread(_get(w, "latency_ms", "p50") for w in windows),
                "p99_ms": spread(_get(w, "latency_ms", "p99") for w in windows),
                "send_lag_p99_ms": spread(_get(w, "send_lag_ms", "p99") for w in windows),
                "errors": sum(int(w.get("errors") or 0) for w in windows),
                "arrivals": sum(int(w.get("arrivals") or 0) for w in windows),
            }
        if fractions:
            out[backend] = {"max_rate": spread(_get(rep, backend, "max_rate") for rep in compare["reps"]),
                            "fractions": fractions}
    return out or None


# -- writes --------------------------------------------------------------------------------------
def writes_summary(writes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not writes or not writes.get("variants"):
        return None
    by_k: dict[str, Any] = {}
    for k in sorted({v["frames_per_call"] for v in writes["variants"]}):
        vs = [v for v in writes["variants"] if v["frames_per_call"] == k]
        by_k[str(k)] = {
            "vs_raw": spread(v.get("vs_raw") for v in vs),
            "actor_rows_per_s": spread(_get(v, "actor", "rows_per_s") for v in vs),
            "raw_rows_per_s": spread(_get(v, "raw", "rows_per_s") for v in vs),
            "rows_per_commit": spread(_get(v, "actor", "rows_per_commit") for v in vs),
            "actor_calls_per_s": spread(_get(v, "actor", "calls_per_s") for v in vs),
            "readback_matches": all(bool(_get(v, "actor", "readback_matches")) for v in vs),
            "reps": len(vs),
        }
    headline = str(writes.get("headline_frames_per_call", 4))
    return {"by_frames_per_call": by_k, "headline_frames_per_call": int(headline),
            "vs_raw": _median(_get(by_k, headline, "vs_raw")),
            "readback_matches": all(v["readback_matches"] for v in by_k.values()),
            "actor_noop_calls_per_s": _get(writes, "actor_noop_calls", "calls_per_s"),
            "host_path": _host_path(writes.get("host_path"))}


def _host_path(h: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The headline's ops sent as a host sends them (coalesced): reported beside it, not a target."""
    if not h:
        return None
    return {"frames_per_op": h.get("frames_per_op"), "vs_raw": h.get("vs_raw"),
            "rows_per_s": _get(h, "host", "rows_per_s"), "raw_rows_per_s": _get(h, "raw", "rows_per_s"),
            "ops_per_message": _get(h, "host", "ops_per_message"),
            "rows_per_commit": _get(h, "host", "rows_per_commit"),
            "readback_matches": bool(_get(h, "host", "readback_matches"))}


# -- sweeps --------------------------------------------------------------------------------------
def sweep_summary(sweep: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Series by (workers, cold|warm) over the client counts; collapse and pool-growth checks."""
    if not sweep or not sweep.get("points"):
        return None
    run_actors_min = int(sweep.get("run_actors_min") or 0)
    series: dict[str, list[dict[str, Any]]] = {}
    worst_share, worst_cold, worst_overshoot = None, None, None
    for point in sweep["points"]:
        w, c = point["workers"], point["concurrency"]
        for phase in ("cold", "warm"):
            r = point.get(phase)
            if not r:
                continue
            sizes = [p.get("size") or 0 for p in r.get("pool_series") or []]
            peak = max(sizes) if sizes else None
            allowed = max(run_actors_min, c)
            overshoot = None if peak is None else peak - allowed
            series.setdefault(f"{w}:{phase}", []).append({
                "workers": w, "phase": phase, "concurrency": c, "runs_per_s": r.get("requests_per_s"),
                # what is judged: a warm window whole, a cold one from its first answer on
                "judged_runs_per_s": r.get("steady_requests_per_s") if phase == "cold" else r.get("requests_per_s"),
                "p50_ms": _get(r, "latency_ms", "p50"), "p99_ms": _get(r, "latency_ms", "p99"),
                "errors": r.get("errors"), "first_completion_s": r.get("first_completion_s"),
                "steady_runs_per_s": r.get("steady_requests_per_s"),
                "pool_start": sizes[0] if sizes else None, "pool_peak": peak,
                "pool_allowed": allowed, "pool_overshoot": overshoot,
                "created_in_window": (_get(r, "pool_series", -1, "created") or 0) - (_get(r, "pool_series", 0, "created") or 0)
                if r.get("pool_series") else None,
                "cpu_per_run_ms": _get(r, "cpu", "server_ms_per_request"),
            })
            if overshoot is not None:
                worst_overshoot = overshoot if worst_overshoot is None else max(worst_overshoot, overshoot)
        # a cold server's start-up (its first answer) is reported, not judged; after it, it must
        # serve about as well as its warm self
        cold, warm = _get(point, "cold", "steady_requests_per_s"), _get(point, "warm", "requests_per_s")
        share = ratio(cold, warm)
        if share is not None:
            worst_cold = share if worst_cold is None else min(worst_cold, share)
    for key, points in series.items():
        points.sort(key=lambda p: p["concurrency"])
        best = None
        for p in points:
            rps = p["judged_runs_per_s"] or 0.0
            p["share_of_best_below"] = None if best is None else ratio(rps, best)
            if p["share_of_best_below"] is not None:
                worst_share = p["share_of_best_below"] if worst_share is None else min(worst_share, p["share_of_best_below"])
            best = rps if best is None else max(best, rps)
    errors = sum(int(p.get("errors") or 0) for pts in series.values() for p in pts)
    return {"series": series, "worst_share_of_best_below": worst_share, "worst_cold_vs_warm": worst_cold,
            "worst_pool_overshoot": worst_overshoot, "errors": errors, "run_actors_min": run_actors_min,
            "collapse_share": COLLAPSE_SHARE, "cold_share": COLD_SHARE}


# -- capacity ------------------------------------------------------------------------------------
def capacity_summary(cap: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not cap:
        return None
    one, many = cap.get("one_per_actor") or {}, cap.get("many_per_actor") or {}
    return {
        "one_per_actor": {k: one.get(k) for k in ("goal", "peak_running", "refused", "accepted", "stop_reason",
                                                  "all_completed", "pss_per_run_actor_mb", "projected_ceiling",
                                                  "reserve_gb", "ramp_s")} if one else None,
        "many_per_actor": ({"runs": many.get("runs"), "runs_per_actor": many.get("runs_per_actor"),
                            "run_actors": many.get("run_actors"), "peak_running": many.get("peak_running"),
                            "refused": _get(many, "submit", "refused"), "accepted": _get(many, "submit", "accepted"),
                            "answer_p99_ms": _get(many, "submit", "answer_ms", "p99"),
                            "arrivals_per_s": _get(many, "submit", "rate"),
                            "runnerhost_pss_gb": many.get("runnerhost_pss_gb"),
                            "pss_per_run_actor_mb": many.get("pss_per_run_actor_mb"),
                            "all_completed": many.get("all_completed")} if many else None),
    }


# -- assembly ------------------------------------------------------------------------------------
def assemble_results(sections: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The results document: headline numbers on top, summaries and raw sections below.

    ``sections`` may hold ``compare`` (peer + open loop), ``writes``, ``sweep``, ``capacity``;
    a missing one gives ``None`` headlines and SKIP verdicts."""
    headline_c = int(_get(meta, "config", "headline_concurrency") or 32)
    peer = peer_summary(sections.get("compare"), headline_c)
    openloop = openloop_summary(sections.get("compare"))
    writes = writes_summary(sections.get("writes"))
    sweep = sweep_summary(sections.get("sweep"))
    capacity = capacity_summary(sections.get("capacity"))
    hc = str(headline_c)
    results: dict[str, Any] = {
        "date": meta.get("date") or utc_now(),
        "command": meta.get("command"),
        "git_commit": meta.get("git_commit"),
        "git_dirty": meta.get("git_dirty"),
        "quick": bool(meta.get("quick")),
        "machine": dict(meta.get("machine") or {}),
        "conditions": dict(meta.get("conditions") or {}),
        "config": dict(meta.get("config") or {}),
        "runtime_s": meta.get("runtime_s"),
        # headline numbers (medians over the repetitions; their spread is in "spread")
        "cpu_per_run_ms": {b: _median(_get(peer, "servers", b, hc, "cpu_per_run_ms")) for b in BACKENDS},
        "langgraph_ratio": {b: _median(_get(peer, "langgraph_ratio", b, hc)) for b in BACKENDS},
        "runs_per_s": {s: _median(_get(peer, "servers", s, hc, "runs_per_s")) for s in ("langgraph", *BACKENDS)},
        "langgraph_cpu_per_run_ms": _median(_get(peer, "servers", "langgraph", hc, "cpu_per_run_ms")),
        "open_loop_p99_ms": {b: {f: _median(v["p99_ms"]) for f, v in (_get(openloop, b, "fractions") or {}).items()}
                             for b in BACKENDS},
        "write_vs_raw": _get(writes, "vs_raw"),
        "spread": {
            "cpu_per_run_ms": {b: _get(peer, "servers", b, hc, "cpu_per_run_ms") for b in BACKENDS},
            "langgraph_ratio": {b: _get(peer, "langgraph_ratio", b, hc) for b in BACKENDS},
            "runs_per_s": {s: _get(peer, "servers", s, hc, "runs_per_s") for s in ("langgraph", *BACKENDS)},
            "open_loop_p99_ms": {b: {f: v["p99_ms"] for f, v in (_get(openloop, b, "fractions") or {}).items()}
                                 for b in BACKENDS},
            "write_vs_raw": _get(writes, "by_frames_per_call", str(_get(writes, "headline_frames_per_call")), "vs_raw"),
        },
        "peer": peer,
        "openloop": openloop,
        "writes": writes,
        "sweep": sweep,
        "capacity": capacity,
        "sections": {k: v for k, v in sections.items() if v is not None},
    }
    results["targets"] = evaluate_targets(results)
    return results


def _errors(results: Mapping[str, Any]) -> int | None:
    """Failed RunnerHost requests across every measured window of the run (peer, open loop, sweeps)."""
    counts: list[int] = []
    for b in BACKENDS:
        for c in (_get(results, "peer", "servers", b) or {}).values():
            counts.append(int(c.get("errors") or 0))
        for f in (_get(results, "openloop", b, "fractions") or {}).values():
            counts.append(int(f.get("errors") or 0))
    if results.get("sweep"):
        counts.append(int(results["sweep"].get("errors") or 0))
    return sum(counts) if counts else None


def _target(name: str, label: str, value: Any, op: str, threshold: float) -> dict[str, Any]:
    if value is None:
        status = "SKIP"
    else:
        ok = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold,
              "==": value == threshold}[op]
        status = "PASS" if ok else "MISS"
    return {"name": name, "label": label, "value": value, "target": f"{op} {threshold:g}", "status": status}


def evaluate_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 12's targets and issue 10's capacity goals, from the numbers of this run."""
    t = []
    for b in BACKENDS:
        t.append(_target(f"cpu_per_run_ms.{b}", f"CPU per 1-chunk echo run, all host processes ({b}), ms",
                         _get(results, "cpu_per_run_ms", b), "<=", 20))
    for b in BACKENDS:
        t.append(_target(f"langgraph_ratio.{b}", f"runs/s ÷ LangGraph in-memory at C = 32 ({b})",
                         _get(results, "langgraph_ratio", b), ">=", 0.5))
    t.append(_target("errors", "failed RunnerHost requests in every window", _errors(results), "==", 0))
    for b in BACKENDS:
        t.append(_target(f"open_loop_p99_80.{b}", f"p99 at 80 % of the max rate, open loop ({b}), ms",
                         _get(results, "open_loop_p99_ms", b, "0.8"), "<", 250))
    w = results.get("writes")
    t.append(_target("write_vs_raw", f"storage actor ÷ raw asyncpg rows/s, same statement and batch, "
                     f"{_get(w, 'headline_frames_per_call') or 4} frames per call", _get(w, "vs_raw"), ">=", 0.7))
    t.append(_target("write_readback", "rows read back = rows written (every write variant)",
                     None if w is None else int(bool(w.get("readback_matches"))), "==", 1))
    s = results.get("sweep")
    t.append(_target("sweep_no_collapse", "sweep: worst runs/s ÷ best at fewer clients (same workers, same phase)",
                     _get(s, "worst_share_of_best_below"), ">=", COLLAPSE_SHARE))
    t.append(_target("sweep_cold_vs_warm", "sweep: worst cold (after its first answer) ÷ warm runs/s, same point",
                     _get(s, "worst_cold_vs_warm"), ">=", COLD_SHARE))
    t.append(_target("sweep_pool_growth", "sweep: RunActors beyond max(pool minimum, clients)",
                     _get(s, "worst_pool_overshoot"), "<=", 0))
    one = _get(results, "capacity", "one_per_actor")
    goal = (one or {}).get("goal") or 150
    t.append(_target("capacity1_held", f"runs_per_actor 1: 60-second runs held at once (goal {goal})",
                     _get(one, "peak_running"), ">=", goal))
    t.append(_target("capacity1_refused", "runs_per_actor 1: refused submissions", _get(one, "refused"), "==", 0))
    many = _get(results, "capacity", "many_per_actor")
    runs = (many or {}).get("runs") or 1000
    t.append(_target("capacity32_held", f"runs_per_actor 32: 60-second runs running at once (goal {runs})",
                     _get(many, "peak_running"), ">=", runs))
    t.append(_target("capacity32_refused", "runs_per_actor 32: refused submissions", _get(many, "refused"), "==", 0))
    t.append(_target("capacity32_pss_gb", "runs_per_actor 32: PSS of all RunnerHost processes, GB",
                     _get(many, "runnerhost_pss_gb"), "<=", 8))
    rate = _get(many, "arrivals_per_s")
    t.append(_target("capacity32_wait_false_p99_ms",
                     f"runs_per_actor 32: ?wait=false answer p99, ms (open loop, {fmt_rate(rate)} arrivals/s)",
                     _get(many, "answer_p99_ms"), "<", 1000))
    return t


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def fmt_spread(s: Mapping[str, Any] | None, digits: int = 1, unit: str = "") -> str:
    """``median [min–max]`` (just the median for one repetition); ``—`` when not measured."""
    if not s:
        return "—"
    med = f"{s['median']:,.{digits}f}{unit}"
    if s.get("n", 1) > 1 and s["min"] != s["max"]:
        return f"{med} [{s['min']:,.{digits}f}–{s['max']:,.{digits}f}]"
    return med


def fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def verdict_counts(targets: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    out = {"PASS": 0, "MISS": 0, "SKIP": 0}
    for t in targets:
        out[t["status"]] += 1
    return out


def fmt_rate(rate: Any) -> str:
    return f"{rate:g}" if isinstance(rate, (int, float)) else "?"
