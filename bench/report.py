"""Result assembly, target verdicts, the console table and the figure (pure; no Ray).

``assemble_results(sections, meta)`` turns the raw section outputs of a bench
run into the ``bench/results.json`` document; ``evaluate_targets`` gives each
target PASS / MISS (or SKIP when its section did not run); ``write_plot``
draws ``bench/results.png`` with matplotlib's Agg backend.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from .stats import ratio

#: (key in results, comparison, threshold, label)
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("e2e_vs_noop", ">=", 0.50, "e2e events/s ≥ 50% of no-op Serve req/s"),
    ("write_vs_raw", ">=", 0.70, "storage-actor rows/s ≥ 70% of raw asyncpg"),
    ("e2e_p99_ms", "<", 250.0, "p99 of 1-chunk echo under load < 250 ms"),
)

SECTIONS = ("e2e", "ttff", "steering", "writes", "workers")


# -- machine / provenance --------------------------------------------------------------
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


# -- assembly ---------------------------------------------------------------------------
def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for key in path:
        if not isinstance(cur, Mapping) or key not in cur:
            return None
        cur = cur[key]
    return cur


def assemble_results(sections: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The results document: headline numbers on top, the section details below.

    ``sections`` may hold ``noop``, ``e2e``, ``ttff``, ``steering``, ``writes``,
    ``workers`` (missing ones → ``None`` headline values and SKIP verdicts).
    """
    noop, e2e = sections.get("noop"), sections.get("e2e")
    writes = sections.get("writes")
    noop_rps = _get(noop, "requests_per_s")
    e2e_rps = _get(e2e, "requests_per_s")
    storage_rows = _get(writes, "storage", "rows_per_s")
    raw_rows = _get(writes, "raw", "rows_per_s")
    ttff = sections.get("ttff") or {}
    steering = sections.get("steering") or {}
    results: dict[str, Any] = {
        "date": meta.get("date") or utc_now(),
        "command": meta.get("command"),
        "git_commit": meta.get("git_commit"),
        "git_dirty": meta.get("git_dirty"),
        "machine": dict(meta.get("machine") or {}),
        "conditions": dict(meta.get("conditions") or {}),
        "config": dict(meta.get("config") or {}),
        "runtime_s": meta.get("runtime_s"),
        # headline numbers
        "e2e_events_per_s": e2e_rps,
        "noop_requests_per_s": noop_rps,
        "e2e_vs_noop": ratio(e2e_rps, noop_rps),
        "e2e_p50_ms": _get(e2e, "latency_ms", "p50"),
        "e2e_p99_ms": _get(e2e, "latency_ms", "p99"),
        "noop_p99_ms": _get(noop, "latency_ms", "p99"),
        "e2e_light": ({"concurrency": _get(sections.get("e2e_light"), "concurrency"),
                       "events_per_s": _get(sections.get("e2e_light"), "requests_per_s"),
                       "p50_ms": _get(sections.get("e2e_light"), "latency_ms", "p50"),
                       "p99_ms": _get(sections.get("e2e_light"), "latency_ms", "p99")}
                      if sections.get("e2e_light") else None),
        "storage_rows_per_s": storage_rows,
        "raw_rows_per_s": raw_rows,
        "write_vs_raw": ratio(storage_rows, raw_rows),
        "ttff_ms": {k: _get(ttff, "ttff_ms", k) for k in ("p50", "p99", "n")} if ttff else None,
        "steering_latency_ms": ({k: _get(steering, "latency_ms", k) for k in ("p50", "p99", "n")}
                                if steering else None),
        "workers_scaling": [
            {"workers": w.get("workers"), "workers_alive": w.get("workers_alive"),
             "events_per_s": _get(w, "load", "requests_per_s"), "p50_ms": _get(w, "load", "latency_ms", "p50"),
             "p99_ms": _get(w, "load", "latency_ms", "p99"), "errors": _get(w, "load", "errors")}
            for w in (sections.get("workers") or [])
        ] or None,
        # details
        "sections": {k: v for k, v in sections.items() if v is not None},
    }
    results["targets"] = evaluate_targets(results)
    return results


def evaluate_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for key, op, threshold, label in TARGETS:
        value = results.get(key)
        if value is None:
            status = "SKIP"
        elif op == ">=":
            status = "PASS" if value >= threshold else "MISS"
        else:
            status = "PASS" if value < threshold else "MISS"
        verdicts.append({"name": key, "label": label, "value": value, "target": f"{op} {threshold:g}",
                         "status": status})
    return verdicts


def write_json(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# -- console -----------------------------------------------------------------------------
def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def render_tables(results: Mapping[str, Any]):
    """Rich renderables (tables) of the results."""
    from rich.table import Table

    main = Table(title="RunnerHost bench", title_justify="left")
    for col in ("measurement", "throughput", "p50", "p99", "notes"):
        main.add_column(col, overflow="fold")
    s = results.get("sections", {})
    noop, e2e = s.get("noop"), s.get("e2e")
    if noop:
        main.add_row("no-op Serve (HTTP POST, JSON)", _fmt(noop["requests_per_s"], " req/s"),
                     _fmt(noop["latency_ms"]["p50"], " ms"), _fmt(noop["latency_ms"]["p99"], " ms"),
                     f"n={noop['completed']} errors={noop['errors']}")
    if e2e:
        main.add_row("e2e echo POST /v1/events (1 chunk)", _fmt(e2e["requests_per_s"], " events/s"),
                     _fmt(e2e["latency_ms"]["p50"], " ms"), _fmt(e2e["latency_ms"]["p99"], " ms"),
                     f"n={e2e['completed']} errors={e2e['errors']} frames/s={_fmt(e2e['frames_per_s'])}")
        main.add_row("  TTFF under that load", "", _fmt(e2e["ttff_ms"]["p50"], " ms"),
                     _fmt(e2e["ttff_ms"]["p99"], " ms"), "")
    light = s.get("e2e_light")
    if light:
        main.add_row(f"  same, {light['concurrency']} clients (little queueing)",
                     _fmt(light["requests_per_s"], " events/s"), _fmt(light["latency_ms"]["p50"], " ms"),
                     _fmt(light["latency_ms"]["p99"], " ms"), f"n={light['completed']} errors={light['errors']}")
    ttff = s.get("ttff")
    if ttff:
        main.add_row("TTFF, idle (sequential)", "", _fmt(ttff["ttff_ms"]["p50"], " ms"),
                     _fmt(ttff["ttff_ms"]["p99"], " ms"),
                     f"n={ttff['ttff_ms']['n']}; full run p50 {_fmt(ttff['latency_ms']['p50'], ' ms')}")
    st = s.get("steering")
    if st:
        main.add_row("steering: msg 2 sent → 'steered:' delta", "", _fmt(st["latency_ms"]["p50"], " ms"),
                     _fmt(st["latency_ms"]["p99"], " ms"),
                     f"n={st['latency_ms']['n']} failures={st.get('failures', 0)}; runner pulls every 50 ms")
    w = s.get("writes")
    if w:
        for v in w.get("variants") or [{**w["storage"], "rows_per_call": w["rows_per_call"]}]:
            main.add_row(f"storage actor write('run_events'), {v['rows_per_call']} row/call",
                         _fmt(v["rows_per_s"], " rows/s"), "", "",
                         f"{v['rows']} rows, {w['concurrency']} calls in flight, "
                         f"avg batch {_fmt(v.get('avg_batch_ops'))} ops, {_fmt(v.get('calls_per_s'))} calls/s")
        if w.get("in_process"):
            ip = w["in_process"]
            main.add_row("  same store code in-process, no Ray, 1 row/op", _fmt(ip["rows_per_s"], " rows/s"), "", "",
                         f"GroupCommitter → StorageService, avg batch {_fmt(ip.get('avg_batch_ops'))} ops")
        if w.get("actor_noop_calls"):
            main.add_row("  StorageActor.stats() calls (no DB)", _fmt(w["actor_noop_calls"]["calls_per_s"], " calls/s"),
                         "", "", f"{w['concurrency']} in flight: the actor-call ceiling")
        main.add_row("raw asyncpg executemany", _fmt(w["raw"]["rows_per_s"], " rows/s"), "", "",
                     f"{w['raw']['rows']} rows, {w['raw']['rows_per_txn']} rows/transaction")
    for row in results.get("workers_scaling") or []:
        main.add_row(f"e2e with {row['workers']} runner worker(s)", _fmt(row["events_per_s"], " events/s"),
                     _fmt(row["p50_ms"], " ms"), _fmt(row["p99_ms"], " ms"),
                     f"workers alive={row.get('workers_alive')} errors={row.get('errors')}")

    verdicts = Table(title="targets", title_justify="left")
    for col in ("target", "value", "threshold", "verdict"):
        verdicts.add_column(col)
    colors = {"PASS": "green", "MISS": "red", "SKIP": "yellow"}
    for t in results.get("targets", []):
        verdicts.add_row(t["label"], _fmt(t["value"], digits=3), t["target"],
                         f"[{colors[t['status']]}]{t['status']}[/]")
    tables = [main, verdicts]
    cpu_noop, cpu_e2e = _get(noop, "cpu"), _get(e2e, "cpu")
    if cpu_e2e or cpu_noop:
        cpu = Table(title="CPU per request in the measured window (ms CPU / request, by process)",
                    title_justify="left")
        for col in ("process", "no-op", "e2e", "e2e processes"):
            cpu.add_column(col)
        labels = list((cpu_e2e or {}).get("cpu_ms_per_request", {}))
        labels += [lb for lb in (cpu_noop or {}).get("cpu_ms_per_request", {}) if lb not in labels]
        for label in labels:
            cpu.add_row(label, _fmt(_get(cpu_noop, "cpu_ms_per_request", label), digits=2),
                        _fmt(_get(cpu_e2e, "cpu_ms_per_request", label), digits=2),
                        _fmt(_get(cpu_e2e, "by_process", label, "processes")))
        cpu.add_row("[dim]cores busy: this bench / whole machine[/]",
                    f"{_fmt(_get(cpu_noop, 'bench_cores_busy'), digits=2)} / "
                    f"{_fmt(_get(cpu_noop, 'machine_cores_busy'), digits=2)}",
                    f"{_fmt(_get(cpu_e2e, 'bench_cores_busy'), digits=2)} / "
                    f"{_fmt(_get(cpu_e2e, 'machine_cores_busy'), digits=2)}", "")
        tables.append(cpu)
    return tables


def print_report(results: Mapping[str, Any], console: Any = None) -> None:
    from rich.console import Console
    console = console or Console()
    for table in render_tables(results):
        console.print(table)
    m = results.get("machine", {})
    console.print(f"[dim]{results.get('date')} · {m.get('cores')} cores · {m.get('ram_gb')} GB · "
                  f"{m.get('cpu_model')} · Ray {m.get('ray')} · commit {str(results.get('git_commit'))[:10]}"
                  f"{' (dirty)' if results.get('git_dirty') else ''} · {results.get('runtime_s')} s[/]")


# -- figure --------------------------------------------------------------------------------
def write_plot(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Three panels: e2e vs no-op (req/s), storage vs raw (rows/s), events/s by runner workers."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=100)

    def bars(ax, labels, values, title, unit, colors):
        vals = [v or 0.0 for v in values]
        drawn = ax.bar(labels, vals, color=colors)
        for rect, v in zip(drawn, values):
            ax.annotate("n/a" if v is None else f"{v:,.0f}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.15)

    r = results.get("e2e_vs_noop")
    bars(axes[0], ["no-op Serve", "e2e echo"], [results.get("noop_requests_per_s"), results.get("e2e_events_per_s")],
         f"HTTP throughput (e2e/no-op = {r:.0%})" if r is not None else "HTTP throughput", "requests/s",
         ["#9e9e9e", "#1f77b4"])
    r = results.get("write_vs_raw")
    variants = _get(results, "sections", "writes", "variants") or []
    labels, values = ["raw\nasyncpg"], [results.get("raw_rows_per_s")]
    if variants:
        labels += [f"actor\n{v['rows_per_call']} rows/call" for v in variants]
        values += [v.get("rows_per_s") for v in variants]
    else:
        labels.append("storage\nactor")
        values.append(results.get("storage_rows_per_s"))
    per_call = _get(results, "sections", "writes", "rows_per_call")
    bars(axes[1], labels, values,
         f"run-event writes (actor {per_call} rows/call ÷ raw = {r:.0%})" if r is not None else "run-event writes",
         "rows/s", ["#9e9e9e"] + ["#2ca02c"] * (len(values) - 1))
    ax = axes[2]
    scaling = [row for row in results.get("workers_scaling") or [] if row.get("events_per_s") is not None]
    if scaling:
        xs = [row["workers"] for row in scaling]
        ax.plot(xs, [row["events_per_s"] for row in scaling], marker="o", color="#d62728", label="events/s")
        ax.set_xticks(xs)
        ax.set_ylim(bottom=0, top=max(row["events_per_s"] for row in scaling) * 1.25)
        for x, row in zip(xs, scaling):
            ax.annotate(f"{row['events_per_s']:.0f}", (x, row["events_per_s"]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("e2e events/s by runner workers", fontsize=10)
    ax.set_xlabel("runner workers", fontsize=9)
    ax.tick_params(labelsize=8)
    m = results.get("machine", {})
    fig.suptitle(f"RunnerHost bench · {str(results.get('date', ''))[:10]} · {m.get('cores')} cores "
                 f"{m.get('cpu_model', '')} · commit {str(results.get('git_commit'))[:8]}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path
