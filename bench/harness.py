"""Orchestration of one bench run: throwaway Postgres, fresh local Ray + Serve, the sections, teardown.

Sections (``--only`` picks a subset; ``noop`` always runs with ``e2e``):

* ``e2e``      no-op Serve vs the real ingress (``POST /v1/events``, 1-chunk echo), same client
* ``ttff``     time to first frame on an idle server
* ``steering`` message 2 → ``steered:`` delta in message 1's stream
* ``writes``   StorageActor ``write("run_events")`` vs raw asyncpg ``executemany``
* ``workers``  e2e events/s with 1, 2, 4 runner workers (app redeployed per setting)
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import shutil
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from store.scratch import create_database, database_url, drop_database

from . import procs
from .report import SECTIONS, assemble_results, git_commit, machine_info, print_report, utc_now, write_json, \
    write_plot

PG_ADMIN_DSN = os.environ.get("RUNNERHOST_BENCH_PG_DSN",
                              os.environ.get("RUNNERHOST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
ECHO = "plugin:builtin/echo/default"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent


@dataclass
class Plan:
    """Counts and durations of one run (``--quick`` shrinks them)."""

    concurrency: int = 32
    conversations: int = 200
    warmup_s: float = 4.0
    duration_s: float = 15.0
    scaling_warmup_s: float = 2.0
    scaling_duration_s: float = 8.0
    worker_counts: tuple[int, ...] = (1, 2, 4)
    ttff_count: int = 60
    steer_lanes: int = 4
    steer_trials: int = 10
    write_rows: int = 60_000
    write_rows_per_call: tuple[int, ...] = (1, 8, 64)
    # The headline variant: a RunActor sends a run's frames in batches of up to FLUSH_AT_FRAMES = 64
    # (and the group commit merges concurrent batches); one row per call measures Ray's call rate.
    write_headline_rows: int = 64
    light_concurrency: int = 4  # e2e latency without queueing (informational, next to the headline load)
    write_concurrency: int = 256
    write_runs: int = 500
    write_max_s: float = 6.0  # per storage-actor variant: stop starting calls after this
    sections: tuple[str, ...] = SECTIONS
    profile_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def quick(cls, sections: tuple[str, ...] = SECTIONS) -> "Plan":
        # 8 connections: the default RunActor pool (8 warm) needs no new actors, so priming is cheap
        return cls(concurrency=8, warmup_s=2.0, duration_s=4.0, scaling_warmup_s=1.0, scaling_duration_s=3.0,
                   worker_counts=(2,), ttff_count=10, steer_lanes=2, steer_trials=2, write_rows=2_000,
                   write_runs=100, write_max_s=4.0, sections=sections)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- environment ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def other_ray_processes() -> dict[str, int]:
    """Ray processes on the machine (``ray::`` workers and raylets), for the conditions note."""
    workers = raylets = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::"):
            workers += 1
        elif "/raylet" in cmd.split(" ", 1)[0]:
            raylets += 1
    return {"ray_worker_processes": workers, "raylets": raylets}


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# -- database ------------------------------------------------------------------------------
def _asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class BenchDatabase:
    """``rh_bench_<random>``: created and migrated on enter, dropped on exit."""

    def __init__(self) -> None:
        self.name = f"rh_bench_{uuid.uuid4().hex[:12]}"
        self.url = database_url(PG_ADMIN_DSN, self.name)

    def __enter__(self) -> "BenchDatabase":
        from store.migrate import upgrade
        asyncio.run(create_database(PG_ADMIN_DSN, self.name))
        try:
            upgrade(self.url)
        except BaseException:
            asyncio.run(drop_database(PG_ADMIN_DSN, self.name))
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        deadline = time.monotonic() + 60
        while True:  # Postgres may be restarting (other engineers' fault tests share it)
            try:
                asyncio.run(drop_database(PG_ADMIN_DSN, self.name))
                return
            except Exception as e:
                if time.monotonic() > deadline:
                    log(f"could not drop {self.name}: {type(e).__name__}: {e}")
                    return
                time.sleep(2)


# -- Serve apps -----------------------------------------------------------------------------
def agents() -> dict[str, Any]:
    from protocol.agents import AgentConfig, MultitaskStrategy
    return {
        "echo1": AgentConfig(runner_id=ECHO, runner_config={"chunks": 1},
                             multitask_strategy=MultitaskStrategy.PARALLEL, description="bench: 1-chunk echo"),
        "steer": AgentConfig(runner_id=ECHO, runner_config={"steering": True, "delay_s": 0.05, "chunks": 40},
                             multitask_strategy=MultitaskStrategy.STEER, description="bench: steerable echo"),
    }


def logging_config():
    from ray.serve.schema import LoggingConfig
    return LoggingConfig(log_level="WARNING", enable_access_log=False)


class Cluster:
    """A fresh local Ray with Serve on a free loopback port (what ``runnerhost serve`` does)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespaces: list[str] = []
        self.data_dir = tempfile.mkdtemp(prefix="rh-bench-")

    def start(self) -> None:
        from actors.placement import local_ray_resources
        import ray
        from ray import serve
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, namespace=self.prefix, resources=local_ray_resources())
        for attempt in range(3):  # Ray's own processes bind random ports too: the one picked may be gone
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            try:
                serve.start(http_options={"host": "127.0.0.1", "port": self.port}, logging_config=logging_config())
                return
            except Exception as exc:
                if attempt == 2:
                    raise
                log(f"Serve could not bind port {self.port} ({type(exc).__name__}); trying another")
                serve.shutdown()

    def stop(self) -> None:
        import ray
        from ray import serve
        try:
            if ray.is_initialized():
                try:
                    serve.shutdown()
                finally:
                    self.kill_detached()
        finally:
            ray.shutdown()

    def deploy_noop(self) -> str:
        from ray import serve
        from .noop import NOOP_APP, NOOP_PREFIX, noop_app
        serve.run(noop_app(), name=NOOP_APP, route_prefix=NOOP_PREFIX, blocking=False,
                  logging_config=logging_config())
        self._wait(f"{NOOP_PREFIX}/v1/events", method="POST")
        return f"{NOOP_PREFIX}/v1/events"

    def deploy_runnerhost(self, database_url: str, tag: str, **pools: Any) -> Any:
        """Deploy the real ingress (``serve.deployment.build_app``) in a namespace of its own."""
        from ray import serve
        from actors.host_config import PoolConfig
        from serve.config import HostSettings, ServerSettings, Settings, StorageSettings
        from serve.deployment import APP_NAME, build_app
        namespace = f"{self.prefix}-{tag}"
        self.namespaces.append(namespace)
        settings = Settings(
            server=ServerSettings(host="127.0.0.1", port=self.port),
            storage=StorageSettings(data_dir=self.data_dir, database_url=database_url),
            host=HostSettings(namespace=namespace),
            pools=PoolConfig(**pools),
            agents=agents(),
        ).resolved()
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False,
                  logging_config=logging_config())
        self._wait("/healthz")
        return settings

    def delete_runnerhost(self) -> None:
        from ray import serve
        from serve.deployment import APP_NAME
        serve.delete(APP_NAME)
        self.kill_detached()

    def kill_detached(self) -> None:
        """Kill the host's detached named actors (storage, registry, providers) of every namespace used."""
        import ray
        from actors.provider_actor import PROVIDER_NAME
        from actors.registry_actor import REGISTRY_NAME
        from actors.storage_actor import STORAGE_NAME
        for namespace in self.namespaces:
            for name in (STORAGE_NAME, REGISTRY_NAME, PROVIDER_NAME):
                try:
                    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
                except Exception:
                    pass
        self.namespaces.clear()

    def _wait(self, path: str, method: str = "GET", timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = httpx.request(method, self.url + path, timeout=5, content=b"{}" if method == "POST" else None)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not answer 200 within {timeout:.0f} s")
            time.sleep(0.2)


def alive_actors(class_name: str) -> int | None:
    """How many actors of ``class_name`` are alive in this Ray (from the GCS actor table)."""
    try:
        from ray._private.state import state
        table = state.actor_table(None)
    except Exception:
        return None
    return sum(1 for info in table.values()
               if info.get("ActorClassName", "").endswith(class_name) and info.get("State") == "ALIVE")


# -- the client process --------------------------------------------------------------------
def run_client(spec: dict[str, Any], timeout: float,
               on_marker: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run ``bench.loadgen`` in its own process; ``on_marker(name, client_pid)`` at its window edges."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen", json.dumps(spec)], cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    last = ""
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
    finally:
        timer.cancel()
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"load client failed ({proc.returncode}): {err[-2000:]}")
    return json.loads(last)


class Profiler:
    """``py-spy record`` (raw collapsed stacks, non-blocking) of the hot-path processes during a window."""

    CLASSES = ("ServeReplica:runnerhost", "ServeReplica:bench-noop", "ProxyActor", "RunActor", "RunnerWorker",
               "StorageActor", "RegistryActor")

    def __init__(self, out_dir: Path, tag: str, seconds: float | None = None) -> None:
        self.out_dir, self.tag, self.seconds = out_dir, tag, seconds
        self.procs: list[subprocess.Popen] = []

    def start(self, actors: dict[int, str]) -> None:
        """Record the busiest process (CPU so far) of each hot-path actor class."""
        cpu = procs.snapshot(os.getpid())
        picked: dict[str, int] = {}
        for pid, name in actors.items():
            for cls in self.CLASSES:
                if name.startswith(cls) and (cls not in picked or cpu.get(pid, 0) > cpu.get(picked[cls], 0)):
                    picked[cls] = pid
        self.record({cls.replace(":", "-"): pid for cls, pid in picked.items()})

    def record(self, targets: dict[str, int]) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in targets.items():
            cmd = [spy, "record", "--pid", str(pid), "--rate", "50", "--nonblocking", "--format", "raw",
                   "--output", str(self.out_dir / f"{self.tag}-{label}-{pid}.txt")]
            if self.seconds:
                cmd[2:2] = ["--duration", str(max(1, int(self.seconds)))]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        """End recordings (SIGINT makes py-spy write its output) and wait for them."""
        for p in self.procs:
            if self.seconds is None and p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=(self.seconds or 0) + 30)
            except subprocess.TimeoutExpired:
                p.kill()


def load(url: str, path: str, plan: Plan, *, warmup: float, duration: float, tag: str = "",
         concurrency: int | None = None) -> dict[str, Any]:
    """Closed-loop load through the one client; CPU per process of this Ray during the measured window."""
    spec = {"mode": "load", "url": url, "path": path, "concurrency": concurrency or plan.concurrency,
            "warmup_s": warmup,
            "duration_s": duration, "conversations": plan.conversations, "agent_id": "echo1"}
    window: dict[str, Any] = {}
    profiler = Profiler(plan.profile_dir, tag, duration) if plan.profile_dir and tag else None

    def on_marker(name: str, client_pid: int) -> None:
        if name == "window_start":
            window.update(actors=procs.actor_pids(), client=client_pid, before=procs.snapshot(os.getpid()),
                          machine_before=procs.machine_jiffies())
            if profiler is not None:
                profiler.start(window["actors"])
        elif name == "window_end":
            window.update(after=procs.snapshot(os.getpid()), machine_after=procs.machine_jiffies())

    result = run_client(spec, timeout=warmup + duration + 180, on_marker=on_marker)
    if profiler is not None:
        profiler.stop()
    if "after" in window:
        by_label = procs.cpu_by_label(window["before"], window["after"], window["actors"],
                                      frozenset({window["client"]}))
        span = result["window_s"]
        ours = sum(float(g["cpu_s"]) for g in by_label.values())
        machine = procs.busy_cores(window["machine_before"], window["machine_after"], os.cpu_count() or 1)
        result["cpu"] = {
            "bench_cores_busy": round(ours / span, 2),
            "machine_cores_busy": machine,
            "foreign_cores_busy": None if machine is None else round(max(0.0, machine - ours / span), 2),
            "by_process": by_label,
            "cpu_ms_per_request": {label: round(float(g["cpu_s"]) * 1000 / max(1, result["completed"]), 2)
                                   for label, g in by_label.items()},
        }
    return result


# -- storage writes ------------------------------------------------------------------------
def _frame(seq: int) -> dict[str, Any]:
    return {"sequence": seq, "type": "message.delta",
            "data": {"chunk": {"type": "text", "content": f"bench delta {seq}"}}}


async def _seed_runs(dsn: str, run_ids: list[str]) -> None:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        now = time.time()
        await conn.executemany(
            "INSERT INTO agent_run (run_id, status, created_at, updated_at, metadata_json, runner_id, agent_id) "
            "VALUES ($1, 'running', $2, $2, '{}'::jsonb, $3, 'bench')",
            [(r, now, ECHO) for r in run_ids])
    finally:
        await conn.close()


async def _drive_writes(calls: list[tuple[str, list[dict[str, Any]]]], write: Callable[..., Any],
                        concurrency: int, max_seconds: float) -> tuple[int, float]:
    """``concurrency`` writers take ``(run_id, frames)`` calls off one list until it is empty or
    ``max_seconds`` have passed (no new call starts after that); returns (rows written, seconds)."""
    it = iter(calls)
    written = 0

    async def writer() -> None:
        nonlocal written
        for run_id, frames in it:
            if time.perf_counter() > deadline:
                return
            n = await write(run_id, frames)
            written += n  # not `written += await …`: that reads `written` before the await

    t0 = time.perf_counter()
    deadline = t0 + max_seconds
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return written, time.perf_counter() - t0


async def _storage_writes(storage: Any, run_ids: list[str], rows: int, per_call: int,
                          concurrency: int, max_seconds: float = 15.0) -> dict[str, Any]:
    """Up to ``rows`` run events through ``StorageActor.write('run_events', ...)``, ``concurrency`` calls in
    flight; no new call starts after ``max_seconds`` (rows/s is of what was written)."""
    from actors.retry import unwrap
    calls: list[tuple[str, list[dict[str, Any]]]] = []
    next_seq = {r: 0 for r in run_ids}
    for i in range(rows // per_call):
        run_id = run_ids[i % len(run_ids)]
        seq = next_seq[run_id]
        next_seq[run_id] = seq + per_call
        calls.append((run_id, [_frame(seq + k) for k in range(per_call)]))

    async def write(run_id: str, frames: list[dict[str, Any]]) -> int:
        return unwrap(await storage.write.remote("run_events", {"run_id": run_id, "frames": frames}))

    before = await storage.stats.remote()
    written, elapsed = await _drive_writes(calls, write, concurrency, max_seconds)
    after = await storage.stats.remote()
    batches = after["batches"] - before["batches"]
    ops = after["ops"] - before["ops"]
    done = written // per_call
    return {"rows": written, "calls": done, "seconds": round(elapsed, 3),
            "rows_per_s": round(written / elapsed, 1), "calls_per_s": round(done / elapsed, 1),
            "batches": batches, "avg_batch_ops": round(ops / batches, 1) if batches else None}


async def _in_process_writes(database_url: str, run_ids: list[str], rows: int, concurrency: int,
                             config: Any, max_seconds: float = 15.0) -> dict[str, Any]:
    """The storage actor's own code (GroupCommitter → StorageService.w_run_events → RunLedgerStore) in this
    process, without Ray: separates the store's per-op SQL cost from the actor-call cost."""
    from actors.core.batching import GroupCommitter
    from actors.core.storage_service import StorageService
    from store.engine import Database
    db = Database(database_url)
    service = StorageService()

    async def apply(ops):  # what StorageActor._apply_batch does, minus the retry loop
        async with db.transaction() as session:
            return await service.write_batch(session, list(ops))

    committer = GroupCommitter(apply, max_batch=config.max_batch, max_delay=config.max_delay_ms / 1000.0)
    calls = [(run_ids[i % len(run_ids)], [_frame(i // len(run_ids))]) for i in range(rows)]

    async def write(run_id: str, frames: list[dict[str, Any]]) -> int:
        return await committer.submit(("run_events", {"run_id": run_id, "frames": frames}))

    try:
        written, elapsed = await _drive_writes(calls, write, concurrency, max_seconds)
    finally:
        await committer.close()
        await db.dispose()
    return {"rows_per_call": 1, "rows": written, "seconds": round(elapsed, 3),
            "rows_per_s": round(written / elapsed, 1), "batches": committer.batches,
            "avg_batch_ops": round(committer.ops / committer.batches, 1) if committer.batches else None}


async def _actor_noop_calls(storage: Any, calls: int, concurrency: int) -> dict[str, Any]:
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


async def _raw_writes(dsn: str, run_ids: list[str], rows: int, per_txn: int) -> dict[str, Any]:
    """The same rows straight into ``agent_run_event`` with asyncpg ``executemany``, ``per_txn`` rows a commit.
    Like the storage actor's callers it starts from frames (Python objects): encoding each ``data`` as
    JSON is part of writing it, on both sides of the comparison."""
    import asyncpg
    frames = [(run_ids[i % len(run_ids)], _frame(i // len(run_ids))) for i in range(rows)]
    conn = await asyncpg.connect(dsn)
    try:
        sql = ("INSERT INTO agent_run_event (run_id, sequence, type, data_json, created_at) "
               "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (run_id, sequence) DO NOTHING")
        t0 = time.perf_counter()
        for i in range(0, rows, per_txn):
            now = time.time()
            chunk = [(run_id, f["sequence"], f["type"], json.dumps(f["data"]), now)
                     for run_id, f in frames[i:i + per_txn]]
            async with conn.transaction():
                await conn.executemany(sql, chunk)
        elapsed = time.perf_counter() - t0
        count = await conn.fetchval("SELECT count(*) FROM agent_run_event WHERE run_id = ANY($1::text[])", run_ids)
    finally:
        await conn.close()
    return {"rows": int(count), "seconds": round(elapsed, 3), "rows_per_s": round(count / elapsed, 1),
            "rows_per_txn": per_txn}


def writes_section(cluster: Cluster, database_url: str, plan: Plan) -> dict[str, Any]:
    """Raw asyncpg first, then the storage actor once per ``write_rows_per_call`` variant (the one of
    ``write_headline_rows`` is the headline ``write_vs_raw``); every variant writes its own runs, so
    nothing conflicts."""
    import ray
    from actors.host_config import StorageConfig
    from actors.storage_actor import get_or_create_storage
    dsn = _asyncpg_dsn(database_url)
    namespace = f"{cluster.prefix}-writes"
    cluster.namespaces.append(namespace)
    config = StorageConfig(database_url=database_url, artifact_root=str(Path(cluster.data_dir) / "artifacts"))
    storage = get_or_create_storage(config, namespace=namespace)
    ray.get(storage.ready.remote())
    tag = uuid.uuid4().hex[:6]
    runs = {name: [f"run_bench_{name}{tag}_{i}" for i in range(plan.write_runs)]
            for name in ["warm", "raw", "inproc", *(f"a{k}" for k in plan.write_rows_per_call)]}

    async def go() -> dict[str, Any]:
        await _seed_runs(dsn, [r for group in runs.values() for r in group])
        await _storage_writes(storage, runs["warm"], max(500, plan.write_rows // 20), 1,
                              plan.write_concurrency, max_seconds=3)  # warmup: connections, code paths
        raw = await _raw_writes(dsn, runs["raw"], plan.write_rows, per_txn=config.max_batch)
        variants = []
        pid = next((p for p, name in procs.actor_pids().items() if name == "StorageActor"), None)
        for k in plan.write_rows_per_call:
            rows = plan.write_rows - plan.write_rows % k
            profiler = Profiler(plan.profile_dir, f"writes{k}") if plan.profile_dir and pid else None
            if profiler is not None:
                profiler.record({"StorageActor": pid})
            variants.append({"rows_per_call": k, **await _storage_writes(
                storage, runs[f"a{k}"], rows, k, plan.write_concurrency, max_seconds=plan.write_max_s)})
            if profiler is not None:
                profiler.stop()
        in_process = await _in_process_writes(database_url, runs["inproc"], plan.write_rows // 2,
                                              plan.write_concurrency, config, max_seconds=plan.write_max_s)
        noop_calls = await _actor_noop_calls(storage, max(1000, min(3000, plan.write_rows // 4)),
                                            plan.write_concurrency)
        headline = next(v for v in variants if v["rows_per_call"] == plan.write_headline_rows)
        return {"raw": raw, "storage": headline, "variants": variants, "in_process": in_process,
                "actor_noop_calls": noop_calls}

    out = asyncio.run(go())
    ray.kill(storage, no_restart=True)
    for v in out["variants"]:
        v["vs_raw"] = round(v["rows_per_s"] / out["raw"]["rows_per_s"], 4)
    out.update(rows_per_call=plan.write_headline_rows, concurrency=plan.write_concurrency,
               max_batch=config.max_batch, max_delay_ms=config.max_delay_ms,
               note=("StorageActor.write('run_events', {run_id, frames}) from the driver process with "
                     f"{plan.write_concurrency} calls in flight (headline: {plan.write_headline_rows} run "
                     f"events per call, a RunActor's flush size; variants {list(plan.write_rows_per_call)}); raw = one asyncpg connection, "
                     f"executemany of {config.max_batch} rows per transaction (the group commit's max_batch), "
                     "same INSERT … ON CONFLICT (run_id, sequence) DO NOTHING"))
    return out


# -- the run ------------------------------------------------------------------------------------
def run(plan: Plan, *, command: str, out_dir: Path = BENCH_DIR) -> dict[str, Any]:
    started = time.monotonic()
    conditions: dict[str, Any] = {"at_start": {**other_ray_processes(), "loadavg": loadavg()},
                                  "load_client": ("asyncio httpx.AsyncClient in its own process "
                                                  "(python -m bench.loadgen) on the same 2-core machine"),
                                  "quick": plan.notes.count("quick") > 0}
    sections: dict[str, Any] = {}
    want = set(plan.sections)
    prefix = f"rh-bench-{uuid.uuid4().hex[:6]}"
    log(f"sections {sorted(want)}; other Ray processes on the machine: {conditions['at_start']}")
    with BenchDatabase() as db:
        log(f"database {db.name} migrated")
        cluster = Cluster(prefix)
        cluster.start()
        log(f"Ray + Serve up on {cluster.url}")
        try:
            if want & {"e2e", "ttff", "steering"}:
                if "e2e" in want:
                    path = cluster.deploy_noop()
                    log("no-op deployment up; measuring it")
                    sections["noop"] = load(cluster.url, path, plan, warmup=plan.warmup_s, duration=plan.duration_s,
                                            tag="noop")
                    log(f"no-op: {sections['noop']['requests_per_s']} req/s")
                cluster.deploy_runnerhost(db.url, "main")
                log("RunnerHost ingress up (default pools)")
                if "e2e" in want:
                    sections["e2e"] = load(cluster.url, "/v1/events", plan, warmup=plan.warmup_s,
                                           duration=plan.duration_s, tag="e2e")
                    sections["e2e"]["pools"] = "PoolConfig() defaults"
                    sections["e2e"]["workers_alive_after"] = alive_actors("RunnerWorker")
                    sections["e2e"]["run_actors_alive_after"] = alive_actors("RunActor")
                    log(f"e2e: {sections['e2e']['requests_per_s']} events/s, "
                        f"p99 {sections['e2e']['latency_ms']['p99']} ms")
                    # Closed-loop latency is mostly queueing (Little's law: concurrency / throughput);
                    # a light load shows what one run costs when it does not wait behind others.
                    sections["e2e_light"] = load(cluster.url, "/v1/events", plan, warmup=plan.scaling_warmup_s,
                                                 duration=plan.scaling_duration_s, tag="e2e_light",
                                                 concurrency=plan.light_concurrency)
                    log(f"e2e at {plan.light_concurrency} clients: {sections['e2e_light']['requests_per_s']} "
                        f"events/s, p99 {sections['e2e_light']['latency_ms']['p99']} ms")
                if "ttff" in want:
                    sections["ttff"] = run_client({"mode": "ttff", "url": cluster.url, "path": "/v1/events",
                                                   "count": plan.ttff_count, "agent_id": "echo1"}, timeout=300)
                    log(f"ttff: p50 {sections['ttff']['ttff_ms']['p50']} ms")
                if "steering" in want:
                    sections["steering"] = run_client({"mode": "steer", "url": cluster.url, "path": "/v1/events",
                                                       "lanes": plan.steer_lanes, "trials": plan.steer_trials,
                                                       "agent_id": "steer"}, timeout=300)
                    log(f"steering: p50 {sections['steering']['latency_ms']['p50']} ms")
                cluster.delete_runnerhost()
            if "writes" in want:
                log("storage writes vs raw asyncpg")
                sections["writes"] = writes_section(cluster, db.url, plan)
                log(f"writes: actor {sections['writes']['storage']['rows_per_s']} rows/s, "
                    f"raw {sections['writes']['raw']['rows_per_s']} rows/s")
            if "workers" in want:
                scaling = []
                for n in plan.worker_counts:
                    # workers_min = workers_max = n: the host warms n workers at start; runs_per_worker=1
                    # spreads runs over the least-loaded of them
                    cluster.deploy_runnerhost(db.url, f"w{n}", workers_min=n, workers_max=n, runs_per_worker=1)
                    result = load(cluster.url, "/v1/events", plan, warmup=plan.scaling_warmup_s,
                                  duration=plan.scaling_duration_s, tag=f"workers{n}")
                    scaling.append({"workers": n, "workers_alive": alive_actors("RunnerWorker"), "load": result})
                    log(f"{n} worker(s): {result['requests_per_s']} events/s, p99 {result['latency_ms']['p99']} ms")
                    cluster.delete_runnerhost()
                sections["workers"] = scaling
        finally:
            conditions["at_end"] = {**other_ray_processes(), "loadavg": loadavg()}
            cluster.stop()
            log("Ray and Serve shut down")
    sha = git_commit(REPO)
    meta = {
        "date": utc_now(), "command": command, "git_commit": sha["commit"], "git_dirty": sha["dirty"],
        "machine": machine_info(), "conditions": conditions, "runtime_s": round(time.monotonic() - started, 1),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.__dict__.items() if k != "notes"},
    }
    results = assemble_results(sections, meta)
    write_json(results, out_dir / "results.json")
    write_plot(results, out_dir / "results.png")
    print_report(results)
    return results

