"""Where the CPU goes: per-process CPU time of this bench's own Ray instance, from ``/proc`` (Linux).

The bench starts Ray with ``address="local"``, so its GCS, raylet and every
worker process descend from the bench's own process, and so does the load
client: ``descendants(os.getpid())`` is exactly this run's process tree, never
another engineer's Ray. Actor processes are named by their class (from the
GCS actor table); the rest by their command line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its closing ")"
    rest = raw[raw.rfind(")") + 2:].split()
    return rest  # rest[0] = state (field 3), rest[1] = ppid (field 4), rest[11] utime, rest[12] stime


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _stat(int(entry.name))
        if st is None:
            continue
        children.setdefault(int(st[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float | None:
    st = _stat(pid)
    if st is None:
        return None
    return (int(st[11]) + int(st[12])) / TICKS


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_label(pid: int, actor_classes: Mapping[int, str], client_pids: frozenset[int] = frozenset()) -> str:
    if pid in client_pids:
        return "load client"
    if pid in actor_classes:
        name = actor_classes[pid]
        if name.startswith("ServeReplica:"):
            return "Serve replica " + name.split(":", 2)[-1]
        return name
    cmd = cmdline(pid)
    first = cmd.split(" ", 1)[0]
    for known in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if known in first or known in cmd[:200]:
            return known
    if cmd.startswith("ray::"):
        return cmd.split(" ", 1)[0]
    return os.path.basename(first) or f"pid {pid}"


def snapshot(root: int) -> dict[int, float]:
    out = {}
    for pid in descendants(root):
        cpu = cpu_seconds(pid)
        if cpu is not None:
            out[pid] = cpu
    return out


def cpu_by_label(before: Mapping[int, float], after: Mapping[int, float], actor_classes: Mapping[int, str],
                 client_pids: frozenset[int] = frozenset()) -> dict[str, dict[str, float | int]]:
    """CPU seconds spent between two snapshots, summed per process label (busiest first)."""
    groups: dict[str, dict[str, float | int]] = {}
    for pid, end in after.items():
        spent = end - before.get(pid, 0.0)
        if spent <= 0:
            continue
        label = process_label(pid, actor_classes, client_pids)
        g = groups.setdefault(label, {"cpu_s": 0.0, "processes": 0})
        g["cpu_s"] = round(float(g["cpu_s"]) + spent, 2)
        g["processes"] = int(g["processes"]) + 1
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
