"""Fixtures of the fault-and-load suite: its own Serve application on the session's one local Ray.

* ``load_pg_url`` (module): a throwaway Postgres database ``rh_test_<random>`` (migrated),
  so the suite's counts are exact; dropped at the end.
* ``load_app`` (module): the real Serve ingress with a real Host, built like
  ``tests/serve/conftest.py``'s ``serve_app``, deployed as its own Serve application
  ``runnerhost-load`` under the route prefix ``/rh-load`` in its own Ray namespace.
  If Serve already runs in this session (``tests/serve`` went first), the app joins
  that proxy and is deleted at the end; otherwise this fixture starts Serve on a free
  loopback port and shuts it down at the end, so ``tests/serve`` can start its own later.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

import pytest
import ray
from ray import serve

from actors.host_config import PoolConfig
from bench.procs import busy_cores, machine_jiffies
from serve.config import ApiKey, HostSettings, ServerSettings, Settings, StorageSettings, hash_key
from serve.deployment import build_app, serve_logging
from tests.conftest import pg_database
from tests.serve.conftest import free_port, wait_healthy, worker_env

LOAD_APP = "runnerhost-load"
ROUTE_PREFIX = "/rh-load"
ADMIN_KEY = "rh-load-admin-" + uuid.uuid4().hex
INGEST_KEY = "rh-load-ingest-" + uuid.uuid4().hex
# named detached actors a Host creates in its namespace (they outlive the Serve app)
NAMED_ACTORS = ("runnerhost-storage", "runnerhost-registry", "runnerhost-providers")


@dataclass
class LoadApp:
    url: str                 # base URL including the route prefix
    namespace: str           # Ray namespace of the Host's named actors
    pg_url: str              # postgresql+asyncpg://… of the app's database
    admin: dict
    ingest: dict


@pytest.fixture(scope="module")
async def load_pg_url() -> AsyncIterator[str]:
    async with pg_database() as url:
        yield url


def _serve_port_if_running() -> int | None:
    from ray.serve.context import _get_global_client
    client = _get_global_client(raise_if_no_controller_running=False)
    return None if client is None else int(client.http_config.port)


def app_actors(app_name: str, class_name: str, *, states: tuple[str, ...] = ("ALIVE",)) -> list[dict]:
    """Actors of ``class_name`` owned by the Serve replicas of ``app_name`` (the Host lives in the
    replica and owns its pools), from the GCS actor table; in ``states``."""
    # Filtered by state in the GCS: the session's table also holds every dead actor of earlier tests,
    # and fetching it whole in this (the load client's) process would skew the latencies it measures.
    actors = [a for state in {"ALIVE", *states}
              for a in ray._private.state.actors(actor_state_name=state).values()]
    replicas = {(a["Address"]["IPAddress"], a["Address"]["Port"]) for a in actors
                if a["State"] == "ALIVE" and a["ActorClassName"].startswith("ServeReplica:")
                and f":{app_name}:" in a["ActorClassName"]}
    assert replicas, f"the Serve replica of {app_name} is not in the actor table"
    return sorted((a for a in actors if a["ActorClassName"] == class_name and a["State"] in states
                   and (a["OwnerAddress"]["IPAddress"], a["OwnerAddress"]["Port"]) in replicas),
                  key=lambda a: a["StartTime"])


@contextlib.contextmanager
def serve_application(name: str, route_prefix: str, pg_url: str, data_dir: str, *, pools: PoolConfig,
                      agents: dict | None = None) -> Iterator[LoadApp]:
    """A RunnerHost Serve application of its own (own namespace, own host) on the session's Ray."""
    namespace = f"rh-{name}-{uuid.uuid4().hex[:8]}"
    port = _serve_port_if_running()
    started_serve = port is None
    if started_serve:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=port, max_body_bytes=64 * 1024),
        storage=StorageSettings(data_dir=data_dir, database_url=pg_url),
        host=HostSettings(namespace=namespace, stale_run_check_s=1.0),
        pools=pools,
        api_keys=[ApiKey(name="admin", sha256=hash_key(ADMIN_KEY), scopes=["admin"]),
                  ApiKey(name="ingest", sha256=hash_key(INGEST_KEY), scopes=["ingest"])],
        **({"agents": agents} if agents is not None else {}),
    ).resolved()
    serve.run(build_app(settings, ray_actor_options={"runtime_env": worker_env()}),
              name=name, route_prefix=route_prefix, blocking=False, logging_config=serve_logging())
    url = f"http://127.0.0.1:{port}{route_prefix}"
    try:
        wait_healthy(url, timeout=90)
        yield LoadApp(url=url, namespace=namespace, pg_url=pg_url,
                      admin={"Authorization": f"Bearer {ADMIN_KEY}"},
                      ingest={"Authorization": f"Bearer {INGEST_KEY}"})
    finally:
        with contextlib.suppress(Exception):
            if started_serve:
                serve.shutdown()  # removes this app too; tests/serve starts its own Serve later
            else:
                serve.delete(name)
        for actor in NAMED_ACTORS:  # detached: they would otherwise hold DB connections until ray.shutdown
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(actor, namespace=namespace), no_restart=True)


@pytest.fixture(scope="module")
def load_app(ray_session, load_pg_url, tmp_path_factory) -> Iterator[LoadApp]:
    # RunActors are leased one per run: the warm pool covers most of the clients, the rest grow on
    # demand (~0.4 s each), and a killed one is replaced.
    with serve_application(LOAD_APP, ROUTE_PREFIX, load_pg_url, str(tmp_path_factory.mktemp("load-data")),
                           pools=PoolConfig(run_actors_min=8, run_actors_max=48, workers_min=1,
                                            workers_max=2)) as app:
        yield app


async def machine_quiet(max_busy_cores: float = 0.7, timeout: float = 60.0) -> float | None:
    """Wait, at most ``timeout`` s, until the whole machine spends under ``max_busy_cores`` over one
    second (earlier modules' processes winding down on the same 2 cores would be measured as our
    latency); the last reading, whatever it was — the caller reports it, never skips."""
    deadline = time.monotonic() + timeout
    while True:
        before = machine_jiffies()
        await asyncio.sleep(1.0)
        busy = busy_cores(before, machine_jiffies(), os.cpu_count() or 1)
        if busy is None or busy < max_busy_cores or time.monotonic() > deadline:
            return busy
