"""One measured window: the load client in its own process, CPU per process around it, profilers.

Every process the bench starts descends from the bench's own process: Ray's (GCS, raylet,
every worker — the RunnerHost server), the LangGraph server, the load clients and py-spy. The
bench registers the roots of everything that is not Ray (:data:`NOT_RAY`), so "every process of
the Ray session" is the bench's descendants minus those trees.

For each window the CPU is split into: the server under test (its whole process tree), the load
client, the bench's own driver process, the bench's other processes (the idle other server), and
the rest of the machine (``foreign``: other users of the cores, from ``/proc/stat``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from . import procs

REPO = Path(__file__).resolve().parents[1]
#: Roots of the bench's non-Ray process trees (the peer server, load clients, py-spy).
NOT_RAY: set[int] = set()


def ray_session_pids() -> list[int]:
    """Every process of this bench's Ray session (its descendants that are not in :data:`NOT_RAY`)."""
    children = procs.children_map()
    excluded: set[int] = set()
    for root in list(NOT_RAY):
        excluded.update(procs.tree(root, children))
    return [p for p in procs.descendants(os.getpid(), children) if p not in excluded]


def run_client(spec: dict[str, Any], timeout: float,
               on_marker: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run ``bench.loadgen`` in its own process; ``on_marker(name, client_pid)`` at its window edges."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    NOT_RAY.add(proc.pid)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    last = ""
    err_lines: list[str] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr), daemon=True)  # never block on stderr
    drain.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            if line.startswith('{"marker"'):
                if on_marker is not None:
                    on_marker(json.loads(line)["marker"], proc.pid)
                continue
            last = line
        proc.wait()
        drain.join(timeout=5)
    finally:
        timer.cancel()
        NOT_RAY.discard(proc.pid)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed ({proc.returncode}): {''.join(err_lines)[-2000:]}")
    return json.loads(last)


class CpuWindow:
    """CPU of the server under test, the client, the bench and the machine between two markers."""

    def __init__(self, server_pids: Callable[[], list[int]]) -> None:
        self.server_pids = server_pids
        self.data: dict[str, Any] = {}

    def start(self, client_pid: int) -> None:
        everyone = [os.getpid(), *procs.descendants(os.getpid())]
        self.data.update(client=client_pid, server0=set(self.server_pids()), actors=procs.actor_pids(),
                         before=procs.snapshot(everyone), machine_before=procs.machine_jiffies())

    def end(self) -> None:
        everyone = [os.getpid(), *procs.descendants(os.getpid())]
        self.data.update(after=procs.snapshot(everyone), machine_after=procs.machine_jiffies(),
                         server1=set(self.server_pids()))
        self.data["actors"].update(procs.actor_pids())

    @property
    def complete(self) -> bool:
        return "after" in self.data

    def summary(self, requests: int, span: float) -> dict[str, Any]:
        d = self.data
        before, after = d["before"], d["after"]
        client = set(procs.tree(d["client"])) | {d["client"]}
        server = (d["server0"] | d["server1"]) - client
        driver = {os.getpid()}
        rest = set(after) - server - client - driver
        server_s = procs.cpu_spent(before, after, server)
        client_s = procs.cpu_spent(before, after, client)
        driver_s = procs.cpu_spent(before, after, driver)
        rest_s = procs.cpu_spent(before, after, rest)
        machine = procs.busy_cores(d["machine_before"], d["machine_after"], os.cpu_count() or 1)
        bench_cores = (server_s + client_s + driver_s + rest_s) / span
        by_label = procs.cpu_by_label(before, after, server, d["actors"])
        per = max(1, requests)
        return {
            "server_cpu_s": round(server_s, 3),
            "server_ms_per_request": round(server_s * 1000 / per, 2) if requests else None,
            "client_ms_per_request": round(client_s * 1000 / per, 2) if requests else None,
            "server_cores_busy": round(server_s / span, 2),
            "client_cores_busy": round(client_s / span, 2),
            "driver_cores_busy": round(driver_s / span, 2),
            "bench_other_cores_busy": round(rest_s / span, 2),
            "machine_cores_busy": machine,
            "foreign_cores_busy": None if machine is None else round(max(0.0, machine - bench_cores), 2),
            "server_processes": len(server & set(after)),
            "by_process": by_label,
            "ms_per_request_by_process": {label: round(float(g["cpu_s"]) * 1000 / per, 2)
                                          for label, g in by_label.items()},
        }


def settle(server_pids: Callable[[], list[int]], max_cores: float = 0.35, interval: float = 1.0,
           timeout: float = 45.0) -> dict[str, float]:
    """Wait until the server idles (below ``max_cores`` over ``interval``): background work of the
    last window or of a deployment (actor creation, pool warm-up) must not land in the next one.
    Returns how long it took and the server's idle CPU (cores) when it stopped waiting."""
    import time
    began = time.monotonic()
    while True:
        pids = server_pids()
        before = procs.snapshot(pids)
        time.sleep(interval)
        cores = procs.cpu_spent(before, procs.snapshot(pids), pids) / interval
        waited = time.monotonic() - began
        if cores < max_cores or waited > timeout:
            return {"settle_s": round(waited, 1), "idle_cores": round(cores, 3)}


def measured(spec: dict[str, Any], server_pids: Callable[[], list[int]], *, timeout: float,
             profiler: "Profiler | None" = None, quiet_first: bool = True) -> dict[str, Any]:
    """Run the client (after the server has settled, unless ``quiet_first`` is false); attach the
    window's CPU (``result["cpu"]``) of ``server_pids`` and the rest."""
    before = settle(server_pids) if quiet_first else None
    window = CpuWindow(server_pids)

    def on_marker(name: str, client_pid: int) -> None:
        if name == "window_start":
            window.start(client_pid)
            if profiler is not None:
                profiler.start(window.data["actors"], server_pids())
        elif name == "window_end":
            window.end()
            if profiler is not None:
                profiler.stop()

    result = run_client(spec, timeout=timeout, on_marker=on_marker)
    if profiler is not None:
        profiler.stop()
    if window.complete:
        requests = int(result.get("completed") or 0)
        result["cpu"] = window.summary(requests, float(result["window_s"]))
        if before is not None:
            result["cpu"]["before_window"] = before
            # the server's background cost (heartbeats, pool upkeep, Ray's own loops), spread over
            # the window's runs: part of the CPU per run, but it shrinks as the rate grows
            rate = result.get("requests_per_s") or result.get("completed_per_s")
            result["cpu"]["idle_ms_per_request"] = round(before["idle_cores"] * 1000 / rate, 2) if rate else None
    return result


class Profiler:
    """``py-spy record`` (raw collapsed stacks, non-blocking) of the busiest process of each hot-path
    class during a window (or every process of a non-Ray server)."""

    CLASSES = ("ServeReplica:runnerhost", "ServeReplica:bench-noop", "ProxyActor", "RunActor", "RunnerWorker",
               "StorageActor", "RegistryActor")

    def __init__(self, out_dir: Path, tag: str) -> None:
        self.out_dir, self.tag = out_dir, tag
        self.procs: list[subprocess.Popen] = []

    def start(self, actors: dict[int, str], server: list[int]) -> None:
        server_set = set(server)
        cpu = procs.snapshot(server)
        picked: dict[str, int] = {}
        for pid, name in actors.items():
            if pid not in server_set:
                continue
            for cls in self.CLASSES:
                if name.startswith(cls) and (cls not in picked or cpu.get(pid, 0) > cpu.get(picked[cls], 0)):
                    picked[cls] = pid
        if not picked:  # not a Ray server (the LangGraph peer): each of its processes
            picked = {f"pid{pid}": pid for pid in server}
        self.record({cls.replace(":", "-"): pid for cls, pid in picked.items()})

    def record(self, targets: dict[str, int]) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in targets.items():
            out = self.out_dir / f"{self.tag}-{label}-{pid}.txt"
            cmd = [spy, "record", "--pid", str(pid), "--rate", "50", "--nonblocking", "--format", "raw",
                   "--output", str(out)]
            with open(out.with_suffix(".log"), "wb") as log:  # py-spy's own messages, failures included
                p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            NOT_RAY.add(p.pid)
            self.procs.append(p)

    def stop(self) -> None:
        """End recordings (SIGINT makes py-spy write its output) and wait for them."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
            NOT_RAY.discard(p.pid)
        self.procs.clear()
