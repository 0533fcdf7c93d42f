"""Several ingress replicas ([server] replicas): what one replica learns every replica knows, a
redeploy with another storage configuration replaces the storage actor without losing a write,
and one registry stall fails no replica's health check."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import httpx
import pytest
import ray
from ray import serve
from ray.exceptions import GetTimeoutError, RayActorError

from actors import constants
from actors.host_config import PoolConfig
from actors.registry_actor import REGISTRY_NAME
from actors.storage_actor import STORAGE_NAME, ensure_storage
from protocol.agents import AgentConfig, ResourcePolicy
from protocol.events import EventEnvelope
from serve.app import SERVED_BY_HEADER
from serve.deployment import build_app

from .conftest import KB_PROBE, REPLICAS, ServeApp, echo_agent, ingress_replicas, worker_env

pytestmark = pytest.mark.ray


async def served_runs(client: httpx.AsyncClient, agent_id: str) -> tuple[str, str]:
    """One run of ``agent_id`` over HTTP: (the replica that served it, the text it streamed)."""
    body = {"agent_id": agent_id, "event": {"event_type": "message.received",
                                             "conversation_id": f"conv-{uuid.uuid4().hex[:10]}",
                                             "input": {"text": "which bases?"}}}
    async with client.stream("POST", "/v1/events", json=body) as response:
        assert response.status_code == 200, await response.aread()
        frames = [json.loads(line) async for line in response.aiter_lines() if line.strip()]
        host = response.headers[SERVED_BY_HEADER]
    assert frames[-1]["type"] == "run.completed", frames
    text = "".join(f["data"]["chunk"]["content"] for f in frames if f["type"] == "message.delta")
    return host, text


async def test_a_knowledge_base_created_through_one_replica_is_granted_through_every_replica(client):
    kb = f"kb-{uuid.uuid4().hex[:8]}"  # unknown to every replica's startup snapshot
    put = await client.put(f"/v1/knowledge/{kb}/documents/handbook.md",
                           json={"content": "Replicas share one catalog."})
    assert put.status_code == 200, put.text
    creator = put.headers[SERVED_BY_HEADER]
    agent_id = f"kbprobe-{uuid.uuid4().hex[:8]}"
    agent = AgentConfig(runner_id=KB_PROBE, resource_policy=ResourcePolicy(knowledge_bases=[kb]))
    r = await client.put(f"/v1/agents/{agent_id}", json=agent.model_dump(mode="json"))
    assert r.status_code == 200, r.text

    granted: dict[str, set[str]] = {}
    for _ in range(60):  # the proxy picks a replica per request: repeat until a non-creator served
        host, text = await served_runs(client, agent_id)
        granted.setdefault(host, set()).add(text)
        if len(granted) == REPLICAS and any(h != creator for h in granted):
            break
    others = [h for h in granted if h != creator]
    assert others, f"60 runs were all served by the replica that created the base ({creator}): {granted}"
    assert all(texts == {kb} for texts in granted.values()), granted  # granted wherever the run went

    listed: dict[str, list[str]] = {}
    for _ in range(60):
        r = await client.get("/v1/knowledge")
        listed[r.headers[SERVED_BY_HEADER]] = r.json()
        if len(listed) == REPLICAS:
            break
    assert all(kb in kbs for kbs in listed.values()), listed


def test_the_replica_health_checks_survive_a_registry_stall(serve_app: ServeApp):
    """The registry process is stopped (SIGSTOP) — every replica's ping to it fails — and each
    replica's own health check still passes; afterwards the registry answers again."""
    replicas = ingress_replicas()
    assert len(replicas) == REPLICAS
    registry = ray.get_actor(REGISTRY_NAME, namespace=serve_app.settings.host.namespace)
    pid = ray.get(registry.__ray_call__.remote(lambda actor: os.getpid()))
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(GetTimeoutError):  # the fault is on: the registry answers nothing
            ray.get(registry.active_count.remote(), timeout=1)
        started = time.monotonic()
        # Each replica's check must come back (not hang on the registry), and come back healthy.
        ray.get([r.check_health.remote() for r in replicas], timeout=constants.HEALTH_REGISTRY_PING_S * 4)
        assert time.monotonic() - started >= constants.HEALTH_REGISTRY_PING_S * 0.9  # its ping timed out
        with pytest.raises(GetTimeoutError):  # … and the fault lasted through the checks
            ray.get(registry.active_count.remote(), timeout=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert ray.get(registry.active_count.remote(), timeout=30) >= 0
    ray.get([r.check_health.remote() for r in replicas], timeout=30)


REDEPLOY_APP = "rh-redeploy"


def _redeploy_settings(serve_app: ServeApp, namespace: str, max_delay_ms: float):
    base = serve_app.settings
    return base.model_copy(update={
        "server": base.server.model_copy(update={"replicas": 1}),
        "storage": base.storage.model_copy(update={"max_delay_ms": max_delay_ms}),
        "host": base.host.model_copy(update={"namespace": namespace}),
        "pools": PoolConfig(run_actors_min=1, run_actors_max=2, workers_min=0, workers_max=1),
        "agents": {"echo": echo_agent()},
    })


def _deploy(settings) -> None:
    serve.run(build_app(settings, ray_actor_options={"runtime_env": worker_env()}),
              name=REDEPLOY_APP, route_prefix=None, blocking=False)


async def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def test_a_redeploy_with_another_storage_config_replaces_the_storage_actor_and_loses_nothing(serve_app):
    namespace = f"rh-redeploy-{uuid.uuid4().hex[:8]}"
    first, second = _redeploy_settings(serve_app, namespace, 3.0), _redeploy_settings(serve_app, namespace, 7.0)
    try:
        await asyncio.to_thread(_deploy, first)
        handle = serve.get_app_handle(REDEPLOY_APP)
        old = await asyncio.to_thread(ray.get_actor, STORAGE_NAME, namespace=namespace)
        old_version = await old.config_version.remote()

        def event() -> EventEnvelope:
            return EventEnvelope.model_validate({
                "event_type": "message.received", "conversation_id": f"conv-{uuid.uuid4().hex[:10]}",
                "input": {"text": "before the redeploy"}})
        accepted = []
        for _ in range(3):
            first_frame = await handle.submit_event.remote(event(), "echo")
            accepted.append(first_frame["ok"]["run_id"])

        # Writers keep the old storage actor busy through the whole redeploy.
        tag = uuid.uuid4().hex[:8]
        acknowledged: list[str] = []
        refused: list[str] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                key = f"{tag}-{w}-{i}"
                i += 1
                try:
                    out = await old.write.remote("kv_set", {"area": "workspace", "namespace": tag,
                                                            "key": key, "value": i})
                except RayActorError:
                    refused.append(key)
                    await asyncio.sleep(0.05)
                    continue
                (acknowledged if "ok" in out else refused).append(key)
        writers = [asyncio.ensure_future(writer(w)) for w in range(8)]
        await _wait(lambda: asyncio.sleep(0, len(acknowledged) >= 50), 30, "writes acknowledged before")

        redeploy = asyncio.ensure_future(asyncio.to_thread(_deploy, second))

        async def replaced():
            try:
                now = await asyncio.to_thread(ray.get_actor, STORAGE_NAME, namespace=namespace)
            except ValueError:
                return None
            return now if now._actor_id != old._actor_id else None
        new = await _wait(replaced, 120, "the storage actor replaced")
        await _wait(lambda: asyncio.sleep(0, bool(refused)), 30, "a write refused by the replaced actor")
        stop.set()
        await asyncio.gather(*writers)
        await asyncio.wait_for(redeploy, 180)

        assert await new.config_version.remote() not in ("", old_version)
        with pytest.raises(RayActorError):
            await old.ready.remote()
        # Nothing acknowledged was lost: every acknowledged key is in the database.
        stored = set()
        for w in range(8):
            keys = await new.read.remote("kv_keys", {"area": "workspace", "namespace": tag, "prefix": f"{tag}-{w}-"})
            stored |= set(keys["ok"])
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
        for run_id in accepted:
            run = await new.read.remote("run_get", {"run_id": run_id})
            assert run["ok"] and run["ok"]["run_id"] == run_id
        # The redeployed replica runs on the new actor; the registry was replaced with it.
        frame = await serve.get_app_handle(REDEPLOY_APP).submit_event.remote(event(), "echo")
        assert frame["ok"]["run_id"]
        registry = await asyncio.to_thread(ray.get_actor, REGISTRY_NAME, namespace=namespace)
        assert await registry.ready.remote()
        # The same configuration reuses the actor it runs.
        again = await ensure_storage(second.host_config().storage, namespace=namespace)
        assert again._actor_id == new._actor_id
    finally:
        await asyncio.to_thread(serve.delete, REDEPLOY_APP)
        for name, _ in [(a["name"], a) for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["namespace"] == namespace]:
            try:
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
            except ValueError:
                pass
