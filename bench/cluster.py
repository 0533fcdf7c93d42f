"""The servers under test on the RunnerHost side: a throwaway Postgres database, a fresh local Ray
with Serve, the no-op Serve app, and RunnerHost deployed on SQLite or on Postgres.

One RunnerHost application is deployed at a time (``runnerhost`` at ``/``), each in a Ray
namespace of its own; ``delete_runnerhost`` removes it, kills its detached actors and waits until
none of its processes is left, so the next measured window pays for nothing of the last one.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from store.scratch import create_database, database_url, drop_database

from . import procs

PG_ADMIN_DSN = os.environ.get("RUNNERHOST_BENCH_PG_DSN",
                              os.environ.get("RUNNERHOST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
ECHO = "plugin:builtin/echo/default"
BACKENDS = ("sqlite", "postgres")
#: Actor classes of one RunnerHost application (all gone after ``delete_runnerhost``).
APP_ACTORS = ("RunActor", "RunnerWorker", "StorageActor", "RegistryActor", "ProviderActor",
              "ServeReplica:runnerhost")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


class BenchDatabase:
    """``rh_bench_<random>``: created and migrated on enter, dropped on exit."""

    def __init__(self) -> None:
        self.name = f"rh_bench_{uuid.uuid4().hex[:12]}"
        self.url = database_url(PG_ADMIN_DSN, self.name)
        self.dsn = asyncpg_dsn(self.url)

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


def echo_agent() -> Any:
    """The 1-chunk echo, executed in the RunActor as the echo runner declares (the peer comparison)."""
    from protocol.agents import AgentConfig, MultitaskStrategy
    return AgentConfig(runner_id=ECHO, runner_config={"chunks": 1}, multitask_strategy=MultitaskStrategy.PARALLEL,
                       description="bench: 1-chunk echo")


def pool_echo_agent() -> Any:
    """The same echo on the runner worker pool (``execution = "pool"``: the sweeps)."""
    from protocol.agents import AgentConfig, MultitaskStrategy
    return AgentConfig(runner_id=ECHO, runner_config={"chunks": 1}, multitask_strategy=MultitaskStrategy.PARALLEL,
                       execution="pool", description="bench: 1-chunk echo on the runner worker pool")


def hold_agent(seconds: float) -> Any:
    from protocol.agents import AgentConfig, MultitaskStrategy
    return AgentConfig(runner_id=ECHO, runner_config={"chunks": 1, "delay_s": seconds},
                       multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=max(600.0, seconds * 5),
                       description=f"bench: waits {seconds:g} s, then answers")


def logging_config():
    from serve.deployment import serve_logging
    return serve_logging("WARNING")


@dataclass
class Deployment:
    backend: str
    namespace: str
    database_url: str
    data_dir: str


class Cluster:
    """A fresh local Ray with Serve on a free loopback port (what ``runnerhost serve`` does), with
    ``node_run_slots`` RunActor slots declared (``actors.placement.local_ray_resources``)."""

    def __init__(self, prefix: str, node_run_slots: int) -> None:
        self.prefix = prefix
        self.node_run_slots = node_run_slots
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespaces: list[str] = []
        self.data_root = tempfile.mkdtemp(prefix="rh-bench-")
        self.current: Deployment | None = None

    def start(self) -> None:
        from actors.placement import local_ray_resources
        import ray
        from ray import serve
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING",
                 log_to_driver=False, namespace=self.prefix, resources=local_ray_resources(self.node_run_slots))
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
            shutil.rmtree(self.data_root, ignore_errors=True)  # the SQLite files and artifacts of this run

    # -- the no-op baseline ---------------------------------------------------------------------
    def deploy_noop(self) -> str:
        from ray import serve
        from .noop import NOOP_APP, NOOP_PREFIX, noop_app
        serve.run(noop_app(), name=NOOP_APP, route_prefix=NOOP_PREFIX, blocking=False,
                  logging_config=logging_config())
        self.wait_http(f"{NOOP_PREFIX}/v1/events", method="POST")
        return f"{NOOP_PREFIX}/v1/events"

    def delete_noop(self) -> None:
        from ray import serve
        from .noop import NOOP_APP
        serve.delete(NOOP_APP)
        self.wait_gone(("ServeReplica:bench-noop",))

    # -- RunnerHost -------------------------------------------------------------------------------
    def deploy_runnerhost(self, backend: str, tag: str, *, agents: dict[str, Any], pg_url: str | None = None,
                          pools: dict[str, Any] | None = None, warm: bool = True) -> Deployment:
        """Deploy the real ingress (``serve.deployment.build_app``) on ``backend``: SQLite in a fresh
        data directory (migrated here, as ``runnerhost serve`` does), or the bench's Postgres
        database ``pg_url``, with exactly ``agents`` (only what is measured: an agent bound to a pooled
        runner makes the host warm a worker pool). ``warm``: return only once the RunActor pool has
        its minimum and no creation is in flight (else the first request meets a cold server)."""
        from ray import serve
        from actors.host_config import PoolConfig
        from serve.config import HostSettings, ServerSettings, Settings, StorageSettings
        from serve.deployment import APP_NAME, build_app
        from store.engine import default_sqlite_url
        from store.migrate import upgrade
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")
        namespace = f"{self.prefix}-{tag}"
        self.namespaces.append(namespace)
        data_dir = str(Path(self.data_root) / tag)
        if backend == "sqlite":
            url = default_sqlite_url(data_dir)
            upgrade(url)
        else:
            if pg_url is None:
                raise ValueError("the postgres backend needs pg_url")
            url = pg_url
        settings = Settings(
            server=ServerSettings(host="127.0.0.1", port=self.port),
            storage=StorageSettings(data_dir=data_dir, database_url=url),
            host=HostSettings(namespace=namespace),
            pools=PoolConfig(**(pools or {})),
            agents=agents,
        ).resolved()
        serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False,
                  logging_config=logging_config())
        self.wait_http("/healthz", timeout=180)
        if warm:
            self.wait_pool(settings.pools.run_actors_min)
        self.current = Deployment(backend=backend, namespace=namespace, database_url=url, data_dir=data_dir)
        return self.current

    def delete_runnerhost(self) -> None:
        from ray import serve
        from serve.deployment import APP_NAME
        serve.delete(APP_NAME)
        self.kill_detached()
        self.current = None
        self.wait_gone(APP_ACTORS)

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

    def health(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/v1/health", timeout=30)
        r.raise_for_status()
        return r.json()

    def wait_pool(self, members: int, timeout: float = 300.0) -> float:
        """Wait until the RunActor pool has ``members`` members and creates none; seconds it took."""
        began = time.monotonic()
        while True:
            try:
                health = self.health()
                pool = next((p for p in health.get("pools") or [] if p.get("name") == "run slots"), {})
                workers_creating = sum(w.get("creating") or 0 for w in health.get("workers") or [])
                if pool.get("size", 0) >= members and not pool.get("creating") and not workers_creating:
                    return time.monotonic() - began
            except httpx.HTTPError:
                pass
            if time.monotonic() - began > timeout:
                raise RuntimeError(f"the RunActor pool did not reach {members} members within {timeout:.0f} s")
            time.sleep(1.0)

    def wait_http(self, path: str, method: str = "GET", timeout: float = 120.0) -> None:
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
            time.sleep(0.3)

    @staticmethod
    def wait_gone(classes: tuple[str, ...], timeout: float = 90.0) -> None:
        """Until no live actor of ``classes`` is left (processes of a deleted app wind down
        asynchronously; one still exiting would charge its CPU to the next window)."""
        deadline = time.monotonic() + timeout
        while True:
            left = [name for name in procs.actor_pids().values() if name.startswith(classes)]
            if not left or time.monotonic() > deadline:
                if left:
                    log(f"{len(left)} actor(s) still alive after {timeout:.0f} s: {sorted(set(left))}")
                return
            time.sleep(0.5)


def alive_actors(prefix: str) -> int:
    """How many live actors' class names start with ``prefix`` (GCS actor table)."""
    return sum(1 for name in procs.actor_pids().values() if name.startswith(prefix))
