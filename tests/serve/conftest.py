"""Fixtures for the HTTP surface: one local Ray, one throwaway Postgres, one Serve app.

* ``serve_ray`` (session): the session's one local Ray (``ray_session`` from
  ``tests/conftest.py``), with the repo root on ``PYTHONPATH`` so Ray workers
  can import ``tests.serve.gateway_probe``.
* ``serve_pg_url`` (session): a throwaway database from ``tests.conftest.pg_database``,
  migrated to head, dropped at the end. The app reaches it by environment reference
  (``tests.conftest.SERVE_DB_ENV``, exported before Ray started, with a password).
* ``serve_app`` (session): ``serve.start`` on a free loopback port, then
  ``serve.run(build_app(settings))`` — the real Serve ingress with a real Host —
  with three API keys (admin / ingest / read), on ``REPLICAS`` (2) ingress replicas: every
  test runs against a multi-replica ingress, as a production ``[server] replicas`` would.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest
import ray
from ray import serve

from actors.host_config import PoolConfig
from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy
from serve.config import ApiKey, HostSettings, ServerSettings, Settings, StorageSettings, hash_key
from serve.deployment import APP_NAME, build_app, serve_logging
from tests.conftest import SERVE_DB_ENV, SERVE_DB_NAME, pg_database

REPO = Path(__file__).resolve().parents[2]
ECHO = "plugin:builtin/echo/default"
GATEWAY_PROBE = "plugin:test/gateway/default"
SHOWCASE = "plugin:test/showcase/default"  # tests.serve.console_runner: every kind of fact in one run
KB_PROBE = "plugin:test/kbprobe/default"  # tests.serve.kb_probe: reports the knowledge bases granted
#: Ingress replicas of the session's Serve app.
REPLICAS = 2

ADMIN_KEY = "rh-test-admin-" + uuid.uuid4().hex
INGEST_KEY = "rh-test-ingest-" + uuid.uuid4().hex
READ_KEY = "rh-test-read-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float) -> None:
    """Block until ``GET {url}/healthz`` answers 200 (a Serve app comes up in the background)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Serve app at {url} did not become healthy within {timeout:.0f} s")
        time.sleep(0.2)


def ingress_replicas() -> list:
    """Handles of the ingress deployment's replica actors (Serve names them
    ``SERVE_REPLICA::<app>#<deployment>#<id>`` in the ``serve`` namespace): a test can call each
    replica's ``check_health`` itself instead of hoping the proxy spreads its requests."""
    from serve.deployment import DEPLOYMENT_NAME
    prefix = f"SERVE_REPLICA::{APP_NAME}#{DEPLOYMENT_NAME}#"
    named = ray.util.list_named_actors(all_namespaces=True)
    return [ray.get_actor(a["name"], namespace=a["namespace"]) for a in named if a["name"].startswith(prefix)]


def wait_replicas_running(count: int, timeout: float) -> None:
    """Until the app's ingress deployment has ``count`` running replicas."""
    from serve.deployment import DEPLOYMENT_NAME
    deadline = time.monotonic() + timeout
    while True:
        app = serve.status().applications.get(APP_NAME)
        deployment = app.deployments.get(DEPLOYMENT_NAME) if app else None
        running = (deployment.replica_states or {}).get("RUNNING", 0) if deployment else 0
        if running >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{running} of {count} ingress replicas running after {timeout:.0f} s")
        time.sleep(0.2)


def worker_env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


@pytest.fixture(scope="session")
def serve_ray(ray_session) -> Iterator[None]:
    """The session's one local Ray (``tests/conftest.py``: repo root on the workers' PYTHONPATH)."""
    assert ray.is_initialized()
    yield


@pytest.fixture(scope="session")
async def serve_pg_url() -> AsyncIterator[str]:
    """The Serve app's own throwaway database (separate from the actor tests' one)."""
    async with pg_database(name=SERVE_DB_NAME) as url:
        yield url


def echo_agent(**runner_config) -> AgentConfig:
    return AgentConfig(runner_id=ECHO, runner_config=runner_config)


TEST_AGENTS = {
    "echo": echo_agent(),
    "slow": echo_agent(delay_s=0.2, chunks=5),
    "long": echo_agent(delay_s=30, chunks=3),
    "reject": AgentConfig(runner_id=ECHO, runner_config={"delay_s": 1.0, "chunks": 3},
                          multitask_strategy=MultitaskStrategy.REJECT),
    "probe": AgentConfig(runner_id=GATEWAY_PROBE, runner_config={"hold_s": 60},
                         resource_policy=ResourcePolicy(harness_gateway=True)),
    "showcase": AgentConfig(runner_id=SHOWCASE),
}


@dataclass
class ServeApp:
    url: str
    settings: Settings
    admin: dict
    ingest: dict
    read: dict


@pytest.fixture(scope="session")
def serve_app(serve_ray, serve_pg_url, tmp_path_factory) -> Iterator[ServeApp]:
    port = free_port()
    settings = Settings(
        server=ServerSettings(host="127.0.0.1", port=port, max_body_bytes=64 * 1024, replicas=REPLICAS),
        storage=StorageSettings(data_dir=str(tmp_path_factory.mktemp("serve-data")), database_url_env=SERVE_DB_ENV),
        host=HostSettings(namespace=f"rh-serve-{uuid.uuid4().hex[:8]}",
                          extra_runners={GATEWAY_PROBE: "tests.serve.gateway_probe:GatewayProbeRunner",
                                         SHOWCASE: "tests.serve.console_runner:ShowcaseRunner",
                                         KB_PROBE: "tests.serve.kb_probe:KnowledgeProbeRunner"}),
        pools=PoolConfig(run_actors_min=2, run_actors_max=16, workers_min=1, workers_max=2),
        agents=TEST_AGENTS,
        api_keys=[ApiKey(name="admin", sha256=hash_key(ADMIN_KEY), scopes=["admin"]),
                  ApiKey(name="ingest", sha256=hash_key(INGEST_KEY), scopes=["ingest"]),
                  ApiKey(name="read", sha256=hash_key(READ_KEY), scopes=["read"])],
    ).resolved()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config=serve_logging())
    serve.run(build_app(settings, ray_actor_options={"runtime_env": worker_env()}),
              name=APP_NAME, route_prefix="/", blocking=False,
              logging_config=serve_logging())
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, timeout=60)
    wait_replicas_running(REPLICAS, timeout=120)
    yield ServeApp(url=url, settings=settings,
                   admin={"Authorization": f"Bearer {ADMIN_KEY}"},
                   ingest={"Authorization": f"Bearer {INGEST_KEY}"},
                   read={"Authorization": f"Bearer {READ_KEY}"})
    serve.shutdown()


@pytest.fixture
async def client(serve_app: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=serve_app.url, headers=serve_app.admin, timeout=60) as c:
        yield c


@pytest.fixture
def conv() -> str:
    return f"conv-{uuid.uuid4().hex[:10]}"
