"""Processes, CPU and memory from ``/proc`` (Linux): what a server costs while the bench drives it.

The bench starts Ray with ``address="local"``, so its GCS, raylet and every worker process
descend from the bench's own process; so do the load client and the LangGraph peer, which
the harness tells apart by their pids. ``descendants(root)`` is exactly this run's process
tree, never another engineer's Ray. Actor processes are named by their class (from the GCS
actor table); the rest by their command line.

Memory is PSS (proportional set size, ``/proc/<pid>/smaps_rollup``): a page shared by N
processes counts 1/N in each, so PSS sums to what a set of processes really holds, where
RSS counts every shared library once per process.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its closing ")"
    return raw[raw.rfind(")") + 2:].split()  # [0] state, [1] ppid, [11] utime, [12] stime


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is not None:
            children.setdefault(int(st[1]), []).append(int(entry.name))
    return children


def descendants(root: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """Every process below ``root`` (not ``root`` itself)."""
    children = children_map() if children is None else children
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree(root: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """``root`` and every process below it (``[]`` once ``root`` is gone)."""
    if not Path(f"/proc/{root}").exists():
        return []
    return [root, *descendants(root, children)]


def cpu_seconds(pid: int) -> float | None:
    st = _stat(pid)
    if st is None:
        return None
    return (int(st[11]) + int(st[12])) / TICKS


def snapshot(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) so far of each live pid."""
    out = {}
    for pid in pids:
        cpu = cpu_seconds(pid)
        if cpu is not None:
            out[pid] = cpu
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_label(pid: int, actor_classes: Mapping[int, str]) -> str:
    if pid in actor_classes:
        name = actor_classes[pid]
        if name.startswith("ServeReplica:"):
            return "Serve replica " + name.split(":", 2)[-1]
        return name
    cmd = cmdline(pid)
    first = cmd.split(" ", 1)[0]
    if "langgraph dev" in cmd[:400]:
        return "langgraph dev"
    for known in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if known in first or known in cmd[:200]:
            return known
    if cmd.startswith("ray::"):
        return cmd.split(" ", 1)[0]
    return os.path.basename(first) or f"pid {pid}"


def cpu_spent(before: Mapping[int, float], after: Mapping[int, float], pids: Iterable[int] | None = None) -> float:
    """CPU seconds spent between two snapshots by ``pids`` (default: every pid of ``after``); a
    process born in between counts from zero, one that died in between is lost (not in ``after``)."""
    chosen = after.keys() if pids is None else [p for p in pids if p in after]
    return sum(max(0.0, after[p] - before.get(p, 0.0)) for p in chosen)


def cpu_by_label(before: Mapping[int, float], after: Mapping[int, float], pids: Iterable[int],
                 actor_classes: Mapping[int, str]) -> dict[str, dict[str, float | int]]:
    """CPU seconds spent between two snapshots by ``pids``, summed per process label (busiest first)."""
    groups: dict[str, dict[str, float | int]] = {}
    for pid in pids:
        if pid not in after:
            continue
        spent = after[pid] - before.get(pid, 0.0)
        if spent <= 0:
            continue
        g = groups.setdefault(process_label(pid, actor_classes), {"cpu_s": 0.0, "processes": 0})
        g["cpu_s"] = float(g["cpu_s"]) + spent
        g["processes"] = int(g["processes"]) + 1
    for g in groups.values():
        g["cpu_s"] = round(float(g["cpu_s"]), 3)
    return dict(sorted(groups.items(), key=lambda kv: -float(kv[1]["cpu_s"])))


def actor_pids() -> dict[int, str]:
    """pid → actor class name of the live actors of the connected Ray (GCS actor table)."""
    try:
        from ray._private.state import state
        table = state.actor_table(None)
    except Exception:
        return {}
    return {int(info["Pid"]): info.get("ActorClassName", "") for info in table.values()
            if info.get("State") == "ALIVE" and info.get("Pid")}


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from ``/proc/stat``."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def busy_cores(before: tuple[int, int] | None, after: tuple[int, int] | None, cores: int) -> float | None:
    """Average number of busy cores of the whole machine between two ``machine_jiffies``."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * cores, 2)


# -- memory ------------------------------------------------------------------------------------
def memory_kb(pid: int) -> dict[str, int] | None:
    """``{"pss": kB, "rss": kB, ...}`` of one process from ``/proc/<pid>/smaps_rollup`` (None when
    the process is gone or unreadable)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key.strip().lower()] = int(parts[0])
    return out if "pss" in out else None


def pss_bytes(pid: int) -> int | None:
    mem = memory_kb(pid)
    return None if mem is None else mem["pss"] * 1024


def pss_total(pids: Iterable[int]) -> tuple[int, int]:
    """(sum of PSS bytes, processes read) over ``pids`` that are still alive."""
    total = count = 0
    for pid in pids:
        value = pss_bytes(pid)
        if value is not None:
            total += value
            count += 1
    return total, count


def meminfo_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0])
    except (OSError, ValueError):
        pass
    return out


def mem_available_bytes() -> int | None:
    kb = meminfo_kb().get("MemAvailable")
    return None if kb is None else kb * 1024


def mem_total_bytes() -> int | None:
    kb = meminfo_kb().get("MemTotal")
    return None if kb is None else kb * 1024
