#!/usr/bin/env python3
"""Multi-node scenarios on a ``ray.cluster_utils.Cluster`` (a head + worker raylets, 1 CPU each).

Each scenario runs in its own process (a Cluster cannot share a process with the
test session's local Ray): it creates a throwaway Postgres database, builds the
cluster, runs RunnerHost on it, prints one line ``RESULT {json}`` and tears
everything down. ``tests/cluster/test_*.py`` run it as a subprocess and assert
on the JSON; run one by hand to watch it (progress goes to stderr):

    python tests/cluster/scenarios.py node_loss   # Host.start() directly; 3 nodes; kills both workers
    python tests/cluster/scenarios.py serve_app   # deploy/serve.yaml through the Serve controller; 2 nodes

The cluster lives under its own ``RAY_TMPDIR``, so its address file never leaks
to a ``ray.init()`` of another process on this machine.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
_OWN_TMP = "RAY_TMPDIR" not in os.environ
if _OWN_TMP:  # before ray is imported: the cluster's files (and address file) stay private
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rhc", dir="/tmp")
os.environ.pop("RAY_ADDRESS", None)

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from actors.host import Host  # noqa: E402
from actors.host_config import HostConfig, PoolConfig, StorageConfig  # noqa: E402
from protocol.errors import RunnerHostError  # noqa: E402
from protocol.agents import AgentConfig, MultitaskStrategy, ResourcePolicy  # noqa: E402
from protocol.events import EventEnvelope  # noqa: E402
from protocol.sessions import SessionKey  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.scratch import create_database, drop_database  # noqa: E402
from tests.cluster.node_runner import NODE_RUNNER, RUNNERS  # noqa: E402

PG_ADMIN_DSN = os.environ.get("RUNNERHOST_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
FAKE_CLAUDE = str(REPO_ROOT / "tests" / "fixtures" / "harness" / "fake_claude")
HARNESS = "plugin:builtin/harness/default"
NAMESPACE = "rh-cluster"
# Exit status when the cluster itself could not start (Ray gives a raylet 30 s to register; a
# saturated machine can miss that): the caller may simply try again.
EXIT_CLUSTER_START = 75
# Notice a dead raylet in ~2 s instead of Ray's default ~30 s.
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                 "health_check_timeout_ms": 500, "health_check_failure_threshold": 4}


def log(*parts: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# -- infrastructure --------------------------------------------------------------------------
@contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"rh_cluster_{uuid.uuid4().hex[:10]}"
    url = asyncio.run(create_database(PG_ADMIN_DSN, name))
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(drop_database(PG_ADMIN_DSN, name))


@contextmanager
def cluster_of(n_workers: int = 2) -> Iterator[tuple[Cluster, list[Any]]]:
    """Head + ``n_workers`` worker raylets (1 CPU each); the driver connects to the head."""
    began = time.monotonic()
    cluster = None
    try:
        try:
            cluster = Cluster(initialize_head=True, connect=False, head_node_args={
                "num_cpus": 1, "include_dashboard": False, "_system_config": SYSTEM_CONFIG})
            workers = [cluster.add_node(num_cpus=1) for _ in range(n_workers)]
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR",
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
        except Exception as exc:
            log(f"CLUSTER START FAILED: {exc}")
            raise SystemExit(EXIT_CLUSTER_START) from None
        log(f"cluster up in {time.monotonic() - began:.1f}s")
        yield cluster, workers
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if _OWN_TMP:
            shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


def host_config(url: str, artifacts: str, pools: PoolConfig, agents: dict[str, AgentConfig]) -> HostConfig:
    return HostConfig(namespace=NAMESPACE, storage=StorageConfig(database_url=url, artifact_root=artifacts),
                      pools=pools, agents=agents, extra_runners=RUNNERS)


@asynccontextmanager
async def running_host(config: HostConfig) -> AsyncIterator[Host]:
    began = time.monotonic()
    host = await Host.start(config)
    log(f"host started in {time.monotonic() - began:.1f}s")
    try:
        yield host
    finally:
        await host.close()


def node_agent(steps: int, delay_s: float) -> AgentConfig:
    return AgentConfig(runner_id=NODE_RUNNER, runner_config={"steps": steps, "delay_s": delay_s},
                       multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=120)


def message(conv: str, text: str = "hi") -> EventEnvelope:
    return EventEnvelope(event_type="message.received", conversation_id=conv,
                         actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text})


async def node_of(handle: Any) -> str | None:
    """The node an actor lives on (None if it is dead)."""
    try:
        return await asyncio.wait_for(
            handle.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()), 10)
    except Exception:
        return None


async def ping_node(handle: Any) -> str | None:
    try:
        return (await asyncio.wait_for(handle.ping.remote(), 10))["node_id"]
    except Exception:
        return None


def runner_node(frames: list[dict[str, Any]]) -> str | None:
    for f in frames:
        if f["type"] == "message.delta":
            content = f["data"]["chunk"]["content"]
            if content.startswith("node:"):
                return content.split(":", 1)[1].strip()
    return None


def terminal(frames: list[dict[str, Any]]) -> dict[str, Any]:
    last = frames[-1] if frames else {}
    return {"type": last.get("type"), "code": (last.get("data") or {}).get("code"),
            "retryable": (last.get("data") or {}).get("retryable")}


class Tracked:
    """One run submitted to the host, its frames collected by a task."""

    def __init__(self, host: Host, conv: str, agent: str, text: str = "hi") -> None:
        self.host, self.conv, self.agent, self.text = host, conv, agent, text
        self.frames: list[dict[str, Any]] = []
        self.first = asyncio.Event()
        self.node_seen = asyncio.Event()
        self.task = asyncio.ensure_future(self._go())

    async def _go(self) -> None:
        stream = await self.host.submit(message(self.conv, self.text), self.agent)
        async for frame in stream:
            self.frames.append(frame)
            self.first.set()
            if runner_node(self.frames):
                self.node_seen.set()
        self.first.set()
        self.node_seen.set()

    @property
    def run_id(self) -> str | None:
        return self.frames[0]["run_id"] if self.frames else None

    async def run_actor_node(self) -> str | None:
        entries = await self.host.registry.run_actors.remote([self.run_id])
        address = entries[0]["actor"] if entries else None
        if address is None:
            return None
        try:
            return await ping_node(await address.resolve())
        except ValueError:  # no actor of that name any more
            return None


async def pool_nodes(host: Host) -> dict[str, list[list[Any]]]:
    """Per pool, ``[node_id or None if dead, leases]`` of each member."""
    pools = {"run_actors": host.run_actors, **host.worker_pools}
    return {name: [[await ping_node(m.item.handle), m.leases] for m in list(pool._members)]
            for name, pool in pools.items()}


def cluster_ids(cluster: Cluster, workers: list[Any]) -> dict[str, Any]:
    return {"head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}


# -- scenarios -------------------------------------------------------------------------------
def harness_agent(workspace: str) -> AgentConfig:
    return AgentConfig(runner_id=HARNESS, multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=120,
                       runner_config={"kind": "claude", "command": [sys.executable, FAKE_CLAUDE],
                                      "workspace_root": workspace, "kill_grace_s": 0.5},
                       resource_policy=ResourcePolicy())


def session_ids(frames: list[dict[str, Any]]) -> list[str]:
    return [f["data"]["value"] for f in frames
            if f["type"] == "state.updated" and f["data"]["key"] == "external.session_id"]


def resumed_id(frames: list[dict[str, Any]]) -> str | None:
    """The ``--resume`` argument the fake claude got (its ``[[argv]]`` reply)."""
    for f in frames:
        if f["type"] == "message.completed":
            argv = json.loads(f["data"]["message"]["content"].removeprefix("ARGV:"))
            return argv[argv.index("--resume") + 1] if "--resume" in argv else None
    return None


async def session_node(conv: str) -> str | None:
    name = SessionKey(HARNESS, "claude", conv, None).actor_name("rh-session")
    try:
        return await ping_node(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        return None


async def ledger_tail(host: Host, run_id: str) -> dict[str, Any]:
    """The ledger's view of a run: status and its last recorded frame."""
    try:
        run = await host.read("run_get", run_id=run_id)
    except RunnerHostError as exc:  # e.g. not_found: the run never reached the ledger
        return {"status": None, "error": exc.code.value}
    page = await host.read("run_events_page", run_id=run_id, after_cursor=None, limit=100)
    last = page["items"][-1] if page["items"] else {}
    return {"status": run["status"], "last_type": last.get("type"),
            "last_retryable": (last.get("data") or {}).get("retryable")}


async def node_loss(cluster: Cluster, workers: list[Any], url: str, artifacts: str) -> dict[str, Any]:
    """Placement, then a worker node dies under load.

    1. Control-plane actors are on the head; warm-up runs execute over the nodes.
    2. Harness sessions are opened until one lives on a worker node (the victim).
    3. Long runs and a long harness turn are in flight; the victim is killed.
    4. Its runs end as recorded retryable failures; the rest complete; new runs
       complete on the surviving nodes; the session's next turn resumes the
       external session id from Postgres on another node.
    5. The other worker dies while the host is idle; runs submitted afterwards
       show whether the pools still hand out members that died with it.
    """
    pools = PoolConfig(run_actors_min=9, run_actors_max=16, workers_min=3, workers_max=4, runs_per_worker=2,
                       health_check_s=1.0)
    agents = {"long": node_agent(24, 0.5), "short": node_agent(1, 0.05),
              "claude": harness_agent(str(Path(artifacts) / "ws"))}
    worker_ids = [w.node_id for w in workers]
    out: dict[str, Any] = cluster_ids(cluster, workers)
    async with running_host(host_config(url, artifacts, pools, agents)) as host:
        await host.warm_runner(NODE_RUNNER)
        for _ in range(240):  # Host.start may warm the rest of the RunActor pool in the background
            if host.run_actors.size >= pools.run_actors_min:
                break
            await asyncio.sleep(0.25)
        out["control"] = {name: await node_of(getattr(host, name)) for name in ("storage", "registry", "providers")}
        warm = [Tracked(host, f"warm{i}", "short") for i in range(6)]
        await asyncio.wait_for(asyncio.gather(*(r.task for r in warm)), 90)
        out["warmup"] = {"terminals": [terminal(r.frames)["type"] for r in warm],
                         "run_nodes": [runner_node(r.frames) for r in warm]}
        out["pools_before"] = await pool_nodes(host)

        # -- sessions: open until one lives on a worker node --------------------------------------
        sessions: dict[str, dict[str, Any]] = {}
        for i in range(6):
            conv = f"sess{i}"
            t = Tracked(host, conv, "claude", "hello")
            await asyncio.wait_for(t.task, 60)
            sessions[conv] = {"terminal": terminal(t.frames), "sid": (session_ids(t.frames) or [None])[0],
                              "node": await session_node(conv)}
            if sessions[conv]["node"] in worker_ids:
                break
        out["sessions"] = sessions
        victim_conv, victim_id = next(((c, s["node"]) for c, s in sessions.items() if s["node"] in worker_ids),
                                      (None, None))
        if victim_id is None:  # every session landed on the head: kill the busier worker anyway
            members = [node for pool in out["pools_before"].values() for node, _ in pool]
            victim_id = max(worker_ids, key=members.count)
        victim = next(w for w in workers if w.node_id == victim_id)
        out["victim"], out["victim_conv"] = victim_id, victim_conv

        # -- load, then the node dies -------------------------------------------------------------
        runs = [Tracked(host, f"load{i}", "long") for i in range(3)]
        turn = Tracked(host, victim_conv, "claude", "long turn [[sleep:30]]") if victim_conv else None
        await asyncio.wait_for(asyncio.gather(*(r.node_seen.wait() for r in runs)), 90)
        if turn is not None:
            await asyncio.wait_for(turn.first.wait(), 60)
            await asyncio.sleep(1.0)  # the harness subprocess is running
        placed = [{"worker": runner_node(r.frames), "run_actor": await r.run_actor_node()} for r in runs]
        turn_actor = await turn.run_actor_node() if turn is not None else None
        out["pools_at_loss"] = await pool_nodes(host)
        log(f"removing {victim_id[:8]}")
        removed_at = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        tracked = runs + ([turn] if turn is not None else [])
        await asyncio.wait_for(asyncio.gather(*(r.task for r in tracked), return_exceptions=True), 120)
        out["inflight_ended_after_s"] = round(time.monotonic() - removed_at, 2)
        inflight = []
        for r, p in zip(runs, placed):
            inflight.append({"run_id": r.run_id, **p, "on_victim": victim_id in p.values(),
                             "terminal": terminal(r.frames), "ledger": await ledger_tail(host, r.run_id),
                             "error": repr(r.task.exception()) if r.task.exception() else None})
        out["inflight"] = inflight
        if turn is not None:
            out["turn"] = {"run_actor": turn_actor, "terminal": terminal(turn.frames),
                           "ledger": await ledger_tail(host, turn.run_id),
                           "error": repr(turn.task.exception()) if turn.task.exception() else None}
        out["pools_after_loss"] = await pool_nodes(host)

        # -- life goes on -----------------------------------------------------------------------------
        later = [Tracked(host, f"after{i}", "short") for i in range(6)]
        await asyncio.wait_for(asyncio.gather(*(r.task for r in later), return_exceptions=True), 120)
        out["new_runs"] = [{"run_id": r.run_id, "terminal": terminal(r.frames), "worker": runner_node(r.frames),
                            "ledger": await ledger_tail(host, r.run_id) if r.run_id else None,
                            "error": repr(r.task.exception()) if r.task.exception() else None} for r in later]
        if victim_conv is not None:
            again = Tracked(host, victim_conv, "claude", "still there? [[argv]]")
            await asyncio.wait_for(again.task, 90)
            out["resumed"] = {"terminal": terminal(again.frames), "resume_arg": resumed_id(again.frames),
                              "node": await session_node(victim_conv)}
        out["pools_end"] = await pool_nodes(host)
        out["alive_nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        out["idle_loss"] = await idle_node_loss(host, cluster, next(w for w in workers if w.node_id != victim_id))
    return out


async def idle_node_loss(host: Host, cluster: Cluster, node: Any) -> dict[str, Any]:
    """The other worker node dies while nothing runs; once Ray has declared it dead, runs
    are submitted one after another: how many land on a dead pool member?"""
    out: dict[str, Any] = {"victim": node.node_id, "pools_at_loss": await pool_nodes(host)}
    cluster.remove_node(node, allow_graceful=False)
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()) and loop.time() < end:
        await asyncio.sleep(0.25)
    runs = []
    for i in range(6):
        run = Tracked(host, f"idle{i}", "short")
        await asyncio.wait_for(asyncio.gather(run.task, return_exceptions=True), 60)
        runs.append({"run_id": run.run_id, "terminal": terminal(run.frames), "worker": runner_node(run.frames),
                     "ledger": await ledger_tail(host, run.run_id) if run.run_id else None,
                     "error": repr(run.task.exception()) if run.task.exception() else None})
    out["runs"] = runs
    await asyncio.sleep(2 * host.config.pools.health_check_s)  # one full upkeep round after the runs
    out["pools_end"] = await pool_nodes(host)
    return out


SERVE_KEY = "rh-cluster-" + uuid.uuid4().hex


async def serve_app(cluster: Cluster, workers: list[Any], url: str, artifacts: str) -> dict[str, Any]:
    """The app of ``deploy/serve.yaml`` deployed by the Serve controller from its import path, as
    ``serve deploy`` and KubeRay do: settings from the nodes' environment, keys enforced, the
    ingress replica and the control plane on the head."""
    import httpx
    import yaml
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    port = free_port()
    config = yaml.safe_load((REPO_ROOT / "deploy" / "serve.yaml").read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["proxy_location"] = "HeadOnly"   # every "node" here shares one IP: one proxy, one port
    config["applications"][0]["args"] = {"data_dir": artifacts}
    out: dict[str, Any] = cluster_ids(cluster, workers)
    began = time.monotonic()
    serve.start(http_options=config["http_options"], proxy_location="HeadOnly")
    serve.context._get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    status = None
    while time.monotonic() - began < 240:
        app = serve.status().applications.get("runnerhost")
        status = app.status if app else None
        if status in ("RUNNING", "DEPLOY_FAILED"):
            break
        await asyncio.sleep(1)
    out["app_status"] = getattr(status, "value", status)
    out["deploy_s"] = round(time.monotonic() - began, 1)
    log(f"app {status} in {out['deploy_s']}s")
    if status != "RUNNING":
        out["app_message"] = serve.status().applications["runnerhost"].message[-2000:] if status else None
        return out
    base = f"http://127.0.0.1:{port}"
    body = {"agent_id": "echo", "event": {"event_type": "message.received", "conversation_id": "c1",
                                          "input": {"text": "over the cluster"}}}
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        out["healthz"] = (await client.get("/healthz")).status_code
        out["no_key"] = (await client.post("/v1/events", json=body)).status_code
        r = await client.post("/v1/events", json=body, headers={"Authorization": f"Bearer {SERVE_KEY}"})
        frames = [json.loads(line) for line in r.text.splitlines() if line.strip()]
        out["with_key"] = {"status": r.status_code, "types": [f["type"] for f in frames]}
    actors = ray._private.state.actors()
    out["replica_nodes"] = [a["Address"]["NodeID"] for a in actors.values()
                            if "ServeReplica" in a.get("ActorClassName", "") and a["State"] == "ALIVE"]
    namespace = os.environ["RUNNERHOST_NAMESPACE"]
    out["control"] = {name: await node_of(ray.get_actor(name, namespace=namespace))
                      for name in ("runnerhost-storage", "runnerhost-registry", "runnerhost-providers")}
    serve.shutdown()
    return out


def _serve_env(url: str) -> dict[str, str]:
    """What every node of the cluster gets (cluster.yaml: the env file; KubeRay: the Secret)."""
    return {"RUNNERHOST_DATABASE_URL": url, "RUNNERHOST_API_KEYS": SERVE_KEY, "RUNNERHOST_NAMESPACE": "rh-serve",
            "RUNNERHOST_CONFIG": str(REPO_ROOT / "runnerhost.toml")}


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# name -> (scenario, worker nodes, environment the nodes start with)
SCENARIOS = {"node_loss": (node_loss, 2, None), "serve_app": (serve_app, 1, _serve_env)}


def main(name: str) -> None:
    scenario, n_workers, node_env = SCENARIOS[name]
    began = time.monotonic()
    artifacts = tempfile.mkdtemp(prefix="rhc-art")
    try:
        with throwaway_database() as url:
            os.environ.update(node_env(url) if node_env else {})   # raylets (and their workers) inherit it
            with cluster_of(n_workers) as (cluster, workers):
                result = asyncio.run(scenario(cluster, workers, url, artifacts))
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
