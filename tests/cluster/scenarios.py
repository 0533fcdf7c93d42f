#!/usr/bin/env python3
"""Multi-node scenarios on a ``ray.cluster_utils.Cluster`` (a head + worker raylets, 1 CPU each).

Each scenario runs in its own process (a Cluster cannot share a process with the
test session's local Ray): it creates a throwaway Postgres database, builds the
cluster, runs RunnerHost on it, prints one line ``RESULT {json}`` and tears
everything down. ``tests/cluster/test_*.py`` run it as a subprocess and assert
on the JSON; run one by hand to watch it (progress goes to stderr):

    python tests/cluster/scenarios.py node_loss   # Host.start() directly; 3 nodes; kills both workers
    python tests/cluster/scenarios.py capacity    # runs wait for run slots until a node with slots joins
    python tests/cluster/scenarios.py serve_app   # deploy/serve.yaml through the Serve controller; 2 nodes

Every node declares ``runnerhost_run_slot`` resources (each RunActor claims one), as the node
types of cluster.yaml and deploy/rayservice.yaml do.

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

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from actors.host import Host  # noqa: E402
from actors.placement import RUN_SLOT_RESOURCE  # noqa: E402
from actors.retry import unwrap  # noqa: E402
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
def cluster_of(n_workers: int = 2, run_slots: int = 12, head_slots: int | None = None
               ) -> Iterator[tuple[Cluster, list[Any]]]:
    """Head + ``n_workers`` worker raylets (1 CPU and ``run_slots`` run slots each; the head
    ``head_slots``, default the same); the driver connects to the head."""
    began = time.monotonic()
    cluster = None
    head_slots = run_slots if head_slots is None else head_slots
    try:
        try:
            cluster = Cluster(initialize_head=True, connect=False, head_node_args={
                "num_cpus": 1, "include_dashboard": False, "_system_config": SYSTEM_CONFIG,
                "resources": {RUN_SLOT_RESOURCE: head_slots}})
            workers = [cluster.add_node(num_cpus=1, resources={RUN_SLOT_RESOURCE: run_slots})
                       for _ in range(n_workers)]
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


def node_agent(steps: int, delay_s: float, gate: str | None = None) -> AgentConfig:
    """NodeRunner; with ``gate`` each run holds its slot until that file exists (``open_gate``)."""
    config: dict[str, Any] = {"steps": steps, "delay_s": delay_s}
    if gate:
        config["gate"] = gate
    return AgentConfig(runner_id=NODE_RUNNER, runner_config=config,
                       multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=300)


def open_gate(gate: str) -> None:
    Path(gate).touch()


async def until(condition: Any, timeout: float, what: str, every: float = 0.1) -> float:
    """Poll ``condition`` (sync or async) until true; fail loudly after ``timeout``. Seconds taken."""
    began = time.monotonic()
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return round(time.monotonic() - began, 2)
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


@contextmanager
def pools_pinned_to(host: Host, node_id: str) -> Iterator[None]:
    """New pool members (RunActors, runner workers) of ``host`` go to ``node_id`` while inside."""
    saved = host._actor_opts
    host._actor_opts = {**saved, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}
    try:
        yield
    finally:
        host._actor_opts = saved


async def pin_session(host: Host, conv: str, node_id: str) -> None:
    """Create ``conv``'s harness session actor on ``node_id``, under the name the registry looks
    up (``get_if_exists``): the registry's ``session_actor`` then finds it instead of placing one."""
    from actors.session_actor import ConversationSessionActor, session_actor_name
    key = SessionKey(HARNESS, "claude", conv, None)
    target = unwrap(await host.registry.runner_target.remote(HARNESS))
    name = session_actor_name(key, await host.registry.config_version.remote())
    handle = ConversationSessionActor.options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
        {"runner_id": HARNESS, "binding_id": "claude", "conversation_id": conv, "thread_id": None},
        target, host.storage, host.config.session_idle_s)
    await asyncio.wait_for(handle.ping.remote(), 60)


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


async def session_node(host: Host, conv: str) -> str | None:
    """The node of ``conv``'s session actor, found by the name the registry gives it (None: gone)."""
    from actors.session_actor import session_actor_name
    generation = await host.registry.config_version.remote()   # part of session actors' names
    name = session_actor_name(SessionKey(HARNESS, "claude", conv, None), generation)
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
    """Placement, then a worker node dies under load, then the other one dies while idle.

    Nothing is left to chance: what must live on a doomed node is put there.

    1. Control-plane actors are on the head; warm-up runs execute over the nodes.
    2. A harness session is pinned to the first worker (the victim) and opened there.
    3. Two more RunActors are pinned to the victim; gated long runs are submitted one at a time
       (each holds its RunActor) until one runs on a RunActor on the victim; a long harness turn
       runs in the victim's session. The victim is killed, then the gate opens.
    4. Its runs end as recorded retryable failures; the rest complete; new runs complete on the
       surviving nodes; the session's next turn resumes the external session id from Postgres on
       another node.
    5. RunActors and a runner worker are pinned to the other worker, which dies while the host is
       idle; runs submitted afterwards show whether the pools still hand out its dead members.
    """
    pools = PoolConfig(run_actors_min=9, run_actors_max=20, workers_min=3, workers_max=6, runs_per_worker=2,
                       health_check_s=1.0)
    gate = str(Path(artifacts) / "gate-load")
    agents = {"long": node_agent(1, 0.0, gate=gate), "short": node_agent(1, 0.05),
              "claude": harness_agent(str(Path(artifacts) / "ws"))}
    victim, spared = workers[0], workers[1]
    victim_id = victim.node_id
    out: dict[str, Any] = cluster_ids(cluster, workers)
    out["victim"] = victim_id
    async with running_host(host_config(url, artifacts, pools, agents)) as host:
        await host.warm_runner(NODE_RUNNER)
        # Host.start may warm the rest of the RunActor pool in the background
        await until(lambda: host.run_actors.size >= pools.run_actors_min, 60, "the RunActor pool's minimum")
        out["control"] = {name: await node_of(getattr(host, name)) for name in ("storage", "registry", "providers")}
        warm = [Tracked(host, f"warm{i}", "short") for i in range(6)]
        await asyncio.wait_for(asyncio.gather(*(r.task for r in warm)), 90)
        out["warmup"] = {"terminals": [terminal(r.frames)["type"] for r in warm],
                         "run_nodes": [runner_node(r.frames) for r in warm]}
        out["pools_before"] = await pool_nodes(host)

        # -- a session on the victim --------------------------------------------------------------
        conv = "sess-victim"
        await pin_session(host, conv, victim_id)
        t = Tracked(host, conv, "claude", "hello")
        await asyncio.wait_for(t.task, 60)
        out["victim_conv"] = conv
        out["sessions"] = {conv: {"terminal": terminal(t.frames), "sid": (session_ids(t.frames) or [None])[0],
                                  "node": await session_node(host, conv)}}

        # -- load with a run on a RunActor of the victim, then the node dies ----------------------
        with pools_pinned_to(host, victim_id):
            await host.run_actors.warm(2)
        runs: list[Tracked] = []
        placed: list[dict[str, Any]] = []
        for i in range(host.run_actors.size + 4):   # each gated run holds a distinct RunActor
            run = Tracked(host, f"load{i}", "long")
            await asyncio.wait_for(run.node_seen.wait(), 60)
            runs.append(run)
            placed.append({"worker": runner_node(run.frames), "run_actor": await run.run_actor_node()})
            on_victim = any(p["run_actor"] == victim_id for p in placed)
            spared_run = any(victim_id not in p.values() for p in placed)
            if on_victim and spared_run:   # one that dies with the node, one that must not
                break
        turn = Tracked(host, conv, "claude", "long turn [[sleep:60]]")
        await asyncio.wait_for(turn.first.wait(), 60)
        turn_actor = await turn.run_actor_node()
        out["pools_at_loss"] = await pool_nodes(host)
        log(f"removing {victim_id[:8]}")
        removed_at = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        # The gate stays shut until the victim's runs have ended: a process of the removed node may
        # linger a moment, and an open gate would let its run finish as if nothing had happened.
        doomed = [r for r, p in zip(runs, placed) if victim_id in p.values()] + [turn]
        try:
            await until(lambda: all(r.task.done() for r in doomed), 90, "the lost node's runs to end")
        except AssertionError as exc:
            out["doomed_not_ended"] = str(exc)   # the tests then see those runs complete or hang
        open_gate(gate)   # the survivors may finish now
        tracked = runs + [turn]
        await asyncio.wait_for(asyncio.gather(*(r.task for r in tracked), return_exceptions=True), 120)
        out["inflight_ended_after_s"] = round(time.monotonic() - removed_at, 2)
        inflight = []
        for r, p in zip(runs, placed):
            inflight.append({"run_id": r.run_id, **p, "on_victim": victim_id in p.values(),
                             "terminal": terminal(r.frames), "ledger": await ledger_tail(host, r.run_id),
                             "error": repr(r.task.exception()) if r.task.exception() else None})
        out["inflight"] = inflight
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
        again = Tracked(host, conv, "claude", "still there? [[argv]]")
        await asyncio.wait_for(again.task, 90)
        out["resumed"] = {"terminal": terminal(again.frames), "resume_arg": resumed_id(again.frames),
                          "node": await session_node(host, conv)}
        out["pools_end"] = await pool_nodes(host)
        out["alive_nodes"] = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        out["idle_loss"] = await idle_node_loss(host, cluster, spared)
    return out


async def idle_node_loss(host: Host, cluster: Cluster, node: Any) -> dict[str, Any]:
    """RunActors and a runner worker are pinned to ``node``, which then dies while nothing runs;
    once Ray has declared it dead, runs are submitted one after another: does any land on a dead
    pool member?"""
    with pools_pinned_to(host, node.node_id):
        await host.run_actors.warm(2)
        await host.worker_pools[NODE_RUNNER].warm(1)
    out: dict[str, Any] = {"victim": node.node_id, "pools_at_loss": await pool_nodes(host)}
    cluster.remove_node(node, allow_graceful=False)
    await until(lambda: not any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes()), 60,
                "Ray to declare the node dead", every=0.25)
    runs = []
    for i in range(6):
        run = Tracked(host, f"idle{i}", "short")
        await asyncio.wait_for(asyncio.gather(run.task, return_exceptions=True), 60)
        runs.append({"run_id": run.run_id, "terminal": terminal(run.frames), "worker": runner_node(run.frames),
                     "ledger": await ledger_tail(host, run.run_id) if run.run_id else None,
                     "error": repr(run.task.exception()) if run.task.exception() else None})
    out["runs"] = runs

    async def no_dead_member() -> bool:   # the upkeep has dropped every member that died
        out["pools_end"] = await pool_nodes(host)
        return all(n is not None for pool in out["pools_end"].values() for n, _ in pool)
    try:
        await until(no_dead_member, 30, "the pools to drop their dead members", every=0.5)
    except AssertionError:
        pass   # pools_end, dead members included, is what the test reports on
    return out


# -- capacity: runs wait for run slots until a node with slots joins --------------------------------
CAPACITY_HEAD_SLOTS = 2
CAPACITY_NEW_NODE_SLOTS = 4
CAPACITY_RUNS = 6
CAPACITY_GIVE_UP = 3   # queued runs cancelled while they wait: their pending creations must go


def pending_run_actors() -> list[dict[str, Any]]:
    """RunActors the GCS holds PENDING_CREATION (waiting for a node with a free run slot)."""
    return [{"name": a["Name"], "state": a["State"]} for a in ray._private.state.actors().values()
            if a["Name"].startswith("rh-run-") and a["State"] == "PENDING_CREATION"]


def slot_demand(gcs_address: str) -> list[dict[str, Any]]:
    """The cluster's unmet task/actor resource demand that asks for run slots — what the
    autoscaler reads to decide that a node must be added."""
    from ray.autoscaler.v2.sdk import get_cluster_status
    status = get_cluster_status(gcs_address)
    return [{"bundle": dict(request.bundle), "count": request.count}
            for demand in status.resource_demands.ray_task_actor_demand
            for request in demand.bundles_by_count if RUN_SLOT_RESOURCE in request.bundle]


async def capacity(cluster: Cluster, workers: list[Any], url: str, artifacts: str) -> dict[str, Any]:
    """A head with ``CAPACITY_HEAD_SLOTS`` run slots gets ``CAPACITY_RUNS`` gated runs: two run,
    the rest queue while the pool keeps RunActor creations pending (the autoscaler's demand) past
    its create timeout. ``CAPACITY_GIVE_UP`` of the waiting callers give up (cancel): the creation
    nobody needs any more is withdrawn from Ray. A node with run slots joins (what the autoscaler
    does): the run still waiting starts on a RunActor there; the gate opens and every run that was
    not cancelled completes."""
    gate = str(Path(artifacts) / "gate-capacity")
    pools = PoolConfig(run_actors_min=CAPACITY_HEAD_SLOTS, run_actors_max=8, max_creating=2, grow_after_s=0.2,
                       create_timeout_s=3.0, health_check_s=0.5, workers_min=1, workers_max=2, runs_per_worker=8)
    out: dict[str, Any] = cluster_ids(cluster, workers)
    async with running_host(host_config(url, artifacts, pools, {"gated": node_agent(1, 0.0, gate=gate)})) as host:
        await host.warm_runner(NODE_RUNNER)
        await until(lambda: host.run_actors.size >= CAPACITY_HEAD_SLOTS, 60, "the warm RunActors")
        out["slots_before"] = ray.cluster_resources().get(RUN_SLOT_RESOURCE)
        out["pool_before"] = host.run_actors.stats()
        runs = [Tracked(host, f"cap{i}", "gated") for i in range(CAPACITY_RUNS)]
        await until(lambda: all(r.run_id for r in runs), 60, "every run's first frame")
        await until(lambda: sum(r.node_seen.is_set() for r in runs) >= CAPACITY_HEAD_SLOTS, 60,
                    "the runs that fit to start")
        await until(lambda: host.run_actors.waiting == CAPACITY_RUNS - CAPACITY_HEAD_SLOTS, 30,
                    "the others to queue")
        running = [r for r in runs if r.node_seen.is_set()]
        queued = [r for r in runs if not r.node_seen.is_set()]
        out["running"] = [{"run_id": r.run_id, "run_actor": await r.run_actor_node()} for r in running]
        out["queued"] = [{"run_id": r.run_id, "first": r.frames[0]["type"], "queue": r.frames[0]["data"],
                          "ledger": await ledger_tail(host, r.run_id)} for r in queued]
        # the pool keeps creations pending past create_timeout_s while the runs wait for them
        await until(lambda: host.run_actors.kept_pending >= 1, 30, "a creation kept pending past its timeout")
        out["pending"] = pending_run_actors()
        out["demand"] = slot_demand(cluster.address)
        out["pool_waiting"] = host.run_actors.stats()
        # callers give up: the surplus pending creation is cancelled (and its actor killed)
        gave_up, queued = queued[1:1 + CAPACITY_GIVE_UP], queued[:1] + queued[1 + CAPACITY_GIVE_UP:]
        for r in gave_up:
            await host.cancel(r.run_id, "the caller gave up")
        await until(lambda: all(r.task.done() for r in gave_up), 30, "the cancelled runs to end")
        await until(lambda: host.run_actors.trimmed_creations >= 1 and len(pending_run_actors()) == len(queued),
                    30, "the surplus pending RunActor to be withdrawn")
        out["gave_up"] = [{"run_id": r.run_id, "terminal": terminal(r.frames), "ledger": await ledger_tail(host, r.run_id)}
                          for r in gave_up]
        out["pending_after_cancel"] = pending_run_actors()
        out["pool_after_cancel"] = host.run_actors.stats()
        runs = [r for r in runs if r not in gave_up]
        log(f"{len(queued)} runs queued; {len(out['pending_after_cancel'])} RunActors pending; adding a node")
        joined_at = time.monotonic()
        node = cluster.add_node(num_cpus=1, resources={RUN_SLOT_RESOURCE: CAPACITY_NEW_NODE_SLOTS})
        cluster.wait_for_nodes()
        out["new_node"] = node.node_id
        await until(lambda: all(r.node_seen.is_set() for r in queued), 120, "the queued runs to start")
        out["queued_started_after_s"] = round(time.monotonic() - joined_at, 2)
        out["started"] = [{"run_id": r.run_id, "run_actor": await r.run_actor_node()} for r in queued]
        out["slots_after"] = ray.cluster_resources().get(RUN_SLOT_RESOURCE)
        open_gate(gate)
        await asyncio.wait_for(asyncio.gather(*(r.task for r in runs), return_exceptions=True), 120)
        out["runs"] = [{"run_id": r.run_id, "terminal": terminal(r.frames), "ledger": await ledger_tail(host, r.run_id),
                        "error": repr(r.task.exception()) if r.task.exception() else None} for r in runs]
        await until(lambda: host.run_actors.creating == 0 and not pending_run_actors(), 30,
                    "no creation left in flight")
        out["pool_after"] = host.run_actors.stats()
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


# name -> (scenario, worker nodes, environment the nodes start with, cluster_of options)
SCENARIOS = {"node_loss": (node_loss, 2, None, {}), "serve_app": (serve_app, 1, _serve_env, {}),
             "capacity": (capacity, 0, None, {"head_slots": CAPACITY_HEAD_SLOTS})}


def main(name: str) -> None:
    scenario, n_workers, node_env, cluster_options = SCENARIOS[name]
    began = time.monotonic()
    artifacts = tempfile.mkdtemp(prefix="rhc-art")
    try:
        with throwaway_database() as url:
            os.environ.update(node_env(url) if node_env else {})   # raylets (and their workers) inherit it
            with cluster_of(n_workers, **cluster_options) as (cluster, workers):
                result = asyncio.run(scenario(cluster, workers, url, artifacts))
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    print("RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
