"""Fault and load over HTTP (loopback only, bounded in time and count).

2,000 events over 200 conversations go through ``POST /v1/events`` (NDJSON) from
concurrent clients while a fault task, at 20 / 40 / 60 / 80 % progress, kills a busy
RunActor (``ray.kill`` through the registry's address of a live run), SIGKILLs the
process of a runner worker of this app while pool runs execute on it, kills the storage
actor (it restarts) while it holds uncommitted writes, and restarts Postgres
(``pg_ctlcluster … restart``). Afterwards Postgres is read directly:

* every event answered 200 (accepted = committed, whatever its stream says later) has
  exactly one ``event_log`` row, exactly one ``agent_run`` row (the run its stream named)
  and exactly one user transcript item;
* every ``agent_run`` row of the database is terminal; a failed one ends in a
  ``run.failed`` ledger frame that is retryable; the ledger of each run has one terminal
  frame and gap-free sequences; the client's terminal frame agrees with the ledger;
* every conversation's transcript ``seq`` is exactly 1..N;
* no request outlived its deadline; HTTP errors are only clean, retryable error-model
  bodies (429/503), counted;
* every fault had its effect: the killed RunActor's run failed ``host.run_actor_died``, the
  worker kill crashed a run (``runner.crashed``), the storage kill landed while writes of
  named runs were uncommitted (those runs still have all their facts, and the actor is a
  restarted incarnation) and the Postgres restart made the storage actor retry a write
  (``runnerhost_db_retries_total{op="write"}``): a fault that landed between writes fails
  the test instead of passing it trivially;
* the counts are printed.

Knobs (environment): ``RH_LOAD_EVENTS`` (2000), ``RH_LOAD_CONVERSATIONS`` (200),
``RH_LOAD_CLIENTS`` (16), ``RH_LOAD_DEADLINE_S`` (60, per request), ``RH_LOAD_BUDGET_S``
(240, the whole load phase), ``RH_LOAD_DUMP`` (a path: per-request outcomes as JSON),
``RH_LOAD_PG_RESTART`` (1; 0 = terminate the app's database connections instead of
restarting the server, for machines where others share the Postgres — an explicit choice,
printed in the summary; with 1 a server that cannot be restarted fails the test).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import ray

from protocol.agents import AgentConfig, MultitaskStrategy
from tests.conftest import PG_ADMIN_DSN
from tests.console.prom import scrape, wait_for
from tests.load.conftest import LOAD_APP, LoadApp, app_actors

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVENTS = int(os.environ.get("RH_LOAD_EVENTS", "2000"))
CONVERSATIONS = int(os.environ.get("RH_LOAD_CONVERSATIONS", "200"))
CLIENTS = int(os.environ.get("RH_LOAD_CLIENTS", "16"))
DEADLINE_S = float(os.environ.get("RH_LOAD_DEADLINE_S", "60"))
PG_RESTART = os.environ.get("RH_LOAD_PG_RESTART", "1") != "0"
LOAD_BUDGET_S = float(os.environ.get("RH_LOAD_BUDGET_S", "240"))  # the whole load phase, hard bound

ECHO = "plugin:builtin/echo/default"
TERMINAL_FRAMES = {"run.completed", "run.failed"}
TERMINAL_STATUSES = {"completed", "failed", "cancelled", "timeout"}
SLOW_AGENT = "load-slow"
SLOW_EVERY = 40  # one event in 40 runs ~1.2 s: the RunActor-kill victims come from these


def _agent(chunks: int, delay_s: float, execution: str = "default") -> AgentConfig:
    # timeout well inside the HTTP deadline: a stalled run must end as runner.timeout, not hang a client
    return AgentConfig(runner_id=ECHO, runner_config={"chunks": chunks, "delay_s": delay_s},
                       multitask_strategy=MultitaskStrategy.PARALLEL, timeout_s=min(30.0, DEADLINE_S / 2),
                       execution=execution)


# echo runs in its RunActor by default; "pool" agents run on the runner workers the worker kill hits
AGENTS = {"load-1": _agent(1, 0.03), "load-2": _agent(2, 0.03), "load-3": _agent(3, 0.03, "pool"),
          SLOW_AGENT: _agent(3, 0.4, "pool")}
POOL_AGENTS = {"load-3", SLOW_AGENT}


def agent_of(i: int) -> str:
    return SLOW_AGENT if i % SLOW_EVERY == SLOW_EVERY // 2 else f"load-{1 + i % 3}"


@dataclass
class Outcome:
    index: int
    event_id: str
    conversation_id: str
    agent_id: str
    status: int | None = None
    accepted: bool = False           # HTTP 200: the run was committed before the answer
    run_id: str | None = None        # named by the stream's first frame (run.queued or run.started)
    first_frame: str | None = None
    terminal: str | None = None      # run.completed | run.failed
    code: str | None = None          # run.failed code
    retryable: bool | None = None
    message: str | None = None       # run.failed error text
    terminal_frames: int = 0
    frames_after_terminal: int = 0
    error_body: Any = None           # parsed body of a non-200 answer
    transport_error: str | None = None
    hung: bool = False
    started_s: float | None = None   # time to the run.started frame
    wall_s: float = 0.0
    began: float = 0.0


@dataclass
class Load:
    app: LoadApp
    outcomes: list[Outcome] = field(default_factory=list)
    done: int = 0
    live: dict[str, tuple[str, float]] = field(default_factory=dict)  # run_id -> (agent, started_at)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    faults: list[dict[str, Any]] = field(default_factory=list)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)  # notified per answer
    slow_started: asyncio.Queue = field(default_factory=asyncio.Queue)      # run_ids of slow runs, as they start

    async def answered(self) -> None:
        self.done += 1
        async with self.progress:
            self.progress.notify_all()

    async def finish(self) -> None:
        self.finished.set()
        async with self.progress:
            self.progress.notify_all()

    async def reached(self, done: int) -> bool:
        """Wait until ``done`` requests were answered; False when the load ended first."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.done >= done or self.finished.is_set())
        return self.done >= done


# -- the clients ----------------------------------------------------------------------------
def event_body(o: Outcome) -> dict[str, Any]:
    return {"agent_id": o.agent_id, "event": {
        "event_id": o.event_id, "event_type": "message.received", "conversation_id": o.conversation_id,
        "actor": {"actor_type": "user", "actor_id": f"user-{o.index % 7}"},
        "input": {"text": f"load message {o.index} alpha beta gamma"}}}


async def post_event(client: httpx.AsyncClient, load: Load, o: Outcome) -> None:
    async with client.stream("POST", "/v1/events", json=event_body(o)) as r:
        o.status = r.status_code
        o.accepted = r.status_code == 200
        if r.status_code != 200:
            raw = await r.aread()
            try:
                o.error_body = json.loads(raw)
            except ValueError:
                o.error_body = raw.decode(errors="replace")[:300]
            return
        async for line in r.aiter_lines():
            if not line.strip():
                continue
            frame = json.loads(line)
            if o.terminal is not None:
                o.frames_after_terminal += 1
            if o.first_frame is None:
                o.first_frame, o.run_id = frame["type"], frame.get("run_id")
            if frame["type"] == "run.started" and o.started_s is None:
                o.started_s = time.monotonic() - o.began
                load.live[o.run_id] = (o.agent_id, time.monotonic())
                if o.agent_id == SLOW_AGENT:
                    load.slow_started.put_nowait(o.run_id)
            elif frame["type"] in TERMINAL_FRAMES:
                o.terminal_frames += 1
                if o.terminal is None:
                    o.terminal = frame["type"]
                    o.code = (frame.get("data") or {}).get("code")
                    o.retryable = (frame.get("data") or {}).get("retryable")
                    o.message = str((frame.get("data") or {}).get("error"))[:200]
                    o.run_id = o.run_id or frame.get("run_id")
                    load.live.pop(o.run_id, None)


async def one(client: httpx.AsyncClient, load: Load, o: Outcome) -> None:
    began = o.began = time.monotonic()
    try:
        await asyncio.wait_for(post_event(client, load, o), DEADLINE_S)
    except asyncio.TimeoutError:
        o.hung = True
    except httpx.HTTPError as exc:
        o.transport_error = type(exc).__name__
    finally:
        o.wall_s = time.monotonic() - began
        if o.run_id:
            load.live.pop(o.run_id, None)
        await load.answered()


async def clients(load: Load, outcomes: list[Outcome]) -> None:
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for o in outcomes:
        queue.put_nowait(o)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    timeout = httpx.Timeout(DEADLINE_S, connect=10.0)
    async with httpx.AsyncClient(base_url=load.app.url, headers=load.app.ingest, limits=limits,
                                 timeout=timeout) as client:
        async def worker() -> None:
            while not queue.empty():
                await one(client, load, queue.get_nowait())
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))


# -- the faults ---------------------------------------------------------------------------------
async def kill_run_actor(load: Load) -> dict[str, Any]:
    """ray.kill the RunActor of a slow run the moment it starts (so it dies mid-run)."""
    registry = ray.get_actor("runnerhost-registry", namespace=load.app.namespace)
    while True:
        run_id = await asyncio.wait_for(load.slow_started.get(), 30)  # the readiness marker: a slow run began
        if run_id not in load.live or time.monotonic() - load.live[run_id][1] > 0.5:
            continue  # it ended or is nearly done: wait for the next one
        entries = await registry.run_actors.remote([run_id])
        if entries and entries[0].get("actor") is not None:
            ray.kill(await entries[0]["actor"].resolve(), no_restart=True)
            return {"fault": "kill RunActor", "run_id": run_id}


def _app_runner_workers() -> list[dict[str, Any]]:
    """Live RunnerWorker actors owned by this app's Serve replica (the Host lives in the replica)."""
    return app_actors(LOAD_APP, "RunnerWorker")


async def kill_runner_worker(load: Load) -> dict[str, Any]:
    """SIGKILL the process of one runner worker of this app while pool runs execute (their leases
    spread over the pool's workers, so with several pool runs live every worker carries one)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pool_runs = [rid for rid, (agent, _) in list(load.live.items()) if agent in POOL_AGENTS]
        workers = _app_runner_workers()
        if workers and len(pool_runs) >= 2 * len(workers):
            pid = int(workers[0]["Pid"])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"ray" in f.read(), f"pid {pid} is not a Ray worker"
            os.kill(pid, signal.SIGKILL)
            return {"fault": "SIGKILL runner worker", "pid": pid, "pool_runs_live": len(pool_runs),
                    "workers": len(workers)}
        await load.reached(load.done + 1)  # look again after the next answer
        if load.finished.is_set():
            break
    raise AssertionError("no runner worker of the load app carried live pool runs")


async def kill_storage_actor(load: Load) -> dict[str, Any]:
    """Kill the storage actor (it restarts; Ray re-sends the calls it had not answered) while it
    holds writes that are not committed yet, and name the runs they belong to."""
    storage = ray.get_actor("runnerhost-storage", namespace=load.app.namespace)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not load.finished.is_set():
        stats = await storage.stats.remote()
        if stats["uncommitted_runs"]:
            ray.kill(storage, no_restart=False)
            return {"fault": "kill storage actor (restarts)", "uncommitted_runs": stats["uncommitted_runs"],
                    "in_flight": len(load.live)}
    raise AssertionError("the storage actor never held an uncommitted write to be killed under")


async def restart_postgres(load: Load) -> dict[str, Any]:
    began = time.monotonic()
    if PG_RESTART:
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        assert versions, ("cannot restart Postgres here (no /etc/postgresql); set RH_LOAD_PG_RESTART=0 to "
                          "terminate the app's connections instead")
        proc = await asyncio.to_thread(
            subprocess.run, ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"],
            capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, f"pg_ctlcluster restart failed: {proc.stderr.strip()}"
        return {"fault": f"pg_ctlcluster {versions[0]} main restart", "in_flight": len(load.live),
                "took_s": round(time.monotonic() - began, 2)}
    # RH_LOAD_PG_RESTART=0: drop every connection of the app's database (a server-side connection loss)
    name = load.app.pg_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()
    return {"fault": "terminate the app's Postgres connections (RH_LOAD_PG_RESTART=0)", "connections": killed,
            "took_s": round(time.monotonic() - began, 2)}


FAULTS = ((0.2, kill_run_actor), (0.4, kill_runner_worker), (0.6, kill_storage_actor), (0.8, restart_postgres))


async def inject_faults(load: Load) -> None:
    for fraction, fault in FAULTS:
        if not await load.reached(int(fraction * EVENTS)):
            raise AssertionError(f"the load finished before the {fault.__name__} fault")
        record = await fault(load)
        record["at_done"] = load.done
        load.faults.append(record)


# -- the facts -------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def read_facts(pg_url: str, event_ids: list[str], conversations: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        deadline = time.monotonic() + 20  # runs nobody reads any more (hung/broken requests) may still end
        while True:
            open_runs = await conn.fetch("SELECT run_id, status FROM agent_run WHERE status <> ALL($1::text[])",
                                         sorted(TERMINAL_STATUSES))
            if not open_runs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        runs = await conn.fetch("SELECT run_id, event_id, status, status_reason, conversation_id FROM agent_run")
        run_ids = [r["run_id"] for r in runs]
        return {
            "open_runs": [dict(r) for r in open_runs],
            "event_log": dict(await conn.fetch(
                "SELECT event_id, count(*) FROM event_log WHERE event_id = ANY($1::text[]) GROUP BY event_id",
                event_ids)),
            "runs": [dict(r) for r in runs],
            "last_frame": {r["run_id"]: {"type": r["type"], "data": _json(r["data_json"]) or {}}
                           for r in await conn.fetch(
                               "SELECT DISTINCT ON (run_id) run_id, type, data_json FROM agent_run_event "
                               "WHERE run_id = ANY($1::text[]) ORDER BY run_id, sequence DESC", run_ids)},
            "ledger_shape": {r["run_id"]: (r["lo"], r["hi"], r["n"], r["terminals"]) for r in await conn.fetch(
                "SELECT run_id, min(sequence) lo, max(sequence) hi, count(*) n, "
                "count(*) FILTER (WHERE type IN ('run.completed', 'run.failed')) terminals "
                "FROM agent_run_event WHERE run_id = ANY($1::text[]) GROUP BY run_id", run_ids)},
            "user_items": dict(await conn.fetch(
                "SELECT event_id, count(*) FROM transcript WHERE role = 'user' AND event_id = ANY($1::text[]) "
                "GROUP BY event_id", event_ids)),
            "assistant_items": {r["run_id"]: (r["n"], r["partial"]) for r in await conn.fetch(
                "SELECT run_id, count(*) n, bool_or(coalesce((metadata_json->>'partial')::boolean, false)) partial "
                "FROM transcript WHERE role = 'assistant' AND run_id = ANY($1::text[]) GROUP BY run_id", run_ids)},
            "transcript_seqs": {r["conversation_id"]: list(r["seqs"]) for r in await conn.fetch(
                "SELECT conversation_id, array_agg(seq ORDER BY seq) seqs FROM transcript "
                "WHERE conversation_id = ANY($1::text[]) GROUP BY conversation_id", conversations)},
            "tables": {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                       for t in ("event_log", "agent_run", "agent_run_event", "transcript")},
        }
    finally:
        await conn.close()


def ledger_status_for(o: Outcome) -> set[str]:
    if o.terminal == "run.completed":
        return {"completed"}
    return {"cancelled"} if o.code == "run.cancelled" else {"timeout", "failed"} \
        if o.code == "runner.timeout" else {"failed"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))] if ordered else 0.0


def summary(load: Load, outcomes: list[Outcome], facts: dict[str, Any], elapsed: float, warm_note: str) -> str:
    accepted = [o for o in outcomes if o.accepted]
    walls = [o.wall_s for o in outcomes]
    failed_codes = Counter(o.code for o in accepted if o.terminal == "run.failed")
    http_errors = Counter(f"{o.status} {o.error_body.get('code') if isinstance(o.error_body, dict) else '?'}"
                          for o in outcomes if o.status not in (None, 200))
    statuses = Counter(r["status"] for r in facts["runs"])
    rows = [
        ("warm-up (not counted)", warm_note),
        ("events sent", f"{len(outcomes)} over {CONVERSATIONS} conversations, {CLIENTS} concurrent clients"),
        ("duration", f"{elapsed:.1f} s ({len(outcomes) / elapsed:.1f} events/s)"),
        ("request wall time", f"p50 {percentile(walls, .5) * 1000:.0f} ms, p99 {percentile(walls, .99) * 1000:.0f}"
                              f" ms, max {max(walls):.2f} s (deadline {DEADLINE_S:.0f} s)"),
        ("accepted (HTTP 200)", f"{len(accepted)} (first frame: "
                                f"{dict(Counter(o.first_frame for o in accepted))})"),
        ("  completed", sum(o.terminal == "run.completed" for o in accepted)),
        ("  failed", f"{sum(failed_codes.values())} {dict(failed_codes) or ''}"),
        ("HTTP errors", f"{sum(http_errors.values())} {dict(http_errors) or ''}"),
        ("transport errors", sum(o.transport_error is not None for o in outcomes)),
        ("hung past deadline", sum(o.hung for o in outcomes)),
        ("ledger agent_run by status", dict(statuses)),
        ("table rows", facts["tables"]),
    ]
    for f in load.faults:
        rows.append((f"fault @{f['at_done']}", {k: v for k, v in f.items() if k not in ("fault", "at_done")}
                     | {"what": f["fault"]}))
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(["", "fault-and-load summary", "-" * 22] + [f"{k:<{width}}  {v}" for k, v in rows])


# -- the test -----------------------------------------------------------------------------------
async def test_2000_events_through_http_with_kills_and_a_postgres_restart(load_app: LoadApp, capsys):
    async with httpx.AsyncClient(base_url=load_app.url, headers=load_app.admin, timeout=30) as admin:
        for agent_id, agent in AGENTS.items():
            r = await admin.put(f"/v1/agents/{agent_id}", json=agent.model_dump(mode="json"))
            assert r.status_code == 200, r.text

    tag = uuid.uuid4().hex[:8]
    conversations = [f"load-{tag}-c{c:03d}" for c in range(CONVERSATIONS)]
    outcomes = [Outcome(i, f"ev-load-{tag}-{i:05d}", conversations[i % CONVERSATIONS], agent_of(i))
                for i in range(EVENTS)]
    load = Load(load_app, outcomes)

    # warm-up (not counted): grow the RunActor pool to the client count and start the runner worker,
    # so the measured phase is the steady state and not ~0.4 s+ of actor creation per client
    warm = [Outcome(-1 - i, f"ev-load-{tag}-warm-{i}", f"load-{tag}-warm-{i}", "load-1") for i in range(CLIENTS)]
    warm_began = time.monotonic()
    await clients(Load(load_app, warm), warm)
    warm_note = (f"{sum(o.terminal == 'run.completed' for o in warm)}/{len(warm)} completed in "
                 f"{time.monotonic() - warm_began:.1f} s; {Counter(o.status for o in warm)}")

    retries_before = db_write_retries()
    began = time.monotonic()
    faults = asyncio.create_task(inject_faults(load))
    timed_out = False
    try:
        await asyncio.wait_for(clients(load, outcomes), LOAD_BUDGET_S)
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        await load.finish()
    elapsed = time.monotonic() - began
    if timed_out:
        faults.cancel()
        pytest.fail(f"the load phase passed its budget of {LOAD_BUDGET_S:.0f} s with {load.done}/{EVENTS} "
                    f"requests done ({load.done / elapsed:.1f}/s); faults injected: {load.faults}")
    await faults  # surfaces a fault that could not be injected

    # the host still serves after all four faults
    async with httpx.AsyncClient(base_url=load_app.url, headers=load_app.ingest, timeout=DEADLINE_S) as c:
        after = Outcome(EVENTS, f"ev-load-{tag}-after", conversations[0], "load-1")
        await post_event(c, load, after)
    assert after.terminal == "run.completed", after

    event_ids = [o.event_id for o in outcomes]
    facts = await read_facts(load_app.pg_url, event_ids, conversations)
    with capsys.disabled():
        print(summary(load, outcomes, facts, elapsed, warm_note))
    if os.environ.get("RH_LOAD_DUMP"):  # per-request outcomes, for diagnosis
        with open(os.environ["RH_LOAD_DUMP"], "w") as f:
            json.dump({"t0": began, "faults": load.faults,
                       "outcomes": [o.__dict__ for o in outcomes]}, f, default=str)

    accepted = [o for o in outcomes if o.accepted]
    runs_by_event: dict[str, list[dict]] = {}
    for run in facts["runs"]:
        runs_by_event.setdefault(run["event_id"], []).append(run)

    # every 200 named its run in the first frame (queued or started: both written before the answer)
    assert [(o.index, o.first_frame) for o in accepted
            if o.first_frame not in ("run.queued", "run.started") or not o.run_id] == []

    # no request hung; every request either streamed a run or got a clean error-model answer
    assert [o.index for o in outcomes if o.hung] == []
    assert max(o.wall_s for o in outcomes) < DEADLINE_S + 1
    assert [(o.index, o.transport_error) for o in outcomes if o.transport_error] == []
    for o in outcomes:
        if o.status != 200:
            assert isinstance(o.error_body, dict) and set(o.error_body) == {"code", "message", "retryable",
                                                                            "details"}, (o.status, o.error_body)
            assert o.status in (429, 503) and o.error_body["retryable"] is True, (o.status, o.error_body)
    assert len(accepted) >= 0.9 * EVENTS, f"only {len(accepted)} of {EVENTS} events were accepted"
    # every failure a client saw was caused by a fault, so each must say "retry me"
    assert [(o.index, o.code, o.message) for o in outcomes
            if o.terminal == "run.failed" and o.retryable is not True] == []

    # every accepted stream ends with exactly one terminal frame, nothing after it
    assert [o.index for o in accepted if o.terminal_frames != 1 or o.frames_after_terminal] == []

    # every accepted event: one EventLog row, one ledger row (its run), one user transcript item
    assert [o.event_id for o in accepted if facts["event_log"].get(o.event_id) != 1] == []
    assert [o.event_id for o in accepted if [r["run_id"] for r in runs_by_event.get(o.event_id, [])]
            != [o.run_id]] == []
    assert [o.event_id for o in accepted if facts["user_items"].get(o.event_id) != 1] == []
    # no event has more than one run, accepted or not
    assert [e for e, runs in runs_by_event.items() if len(runs) > 1] == []

    # every ledger row is terminal; the client's terminal frame agrees with it
    assert facts["open_runs"] == []
    by_run = {r["run_id"]: r for r in facts["runs"]}
    assert [(o.run_id, o.terminal, o.code, by_run[o.run_id]["status"]) for o in accepted
            if by_run[o.run_id]["status"] not in ledger_status_for(o)] == []

    # each run's ledger: sequences 0..n-1, exactly one terminal frame, and it is the last one
    bad_shape = {rid: shape for rid, shape in facts["ledger_shape"].items()
                 if shape[0] != 0 or shape[1] != shape[2] - 1 or shape[3] != 1}
    assert bad_shape == {}
    assert [rid for rid in by_run if facts["last_frame"].get(rid, {}).get("type") not in TERMINAL_FRAMES] == []

    # failures (all caused by the faults) are recorded as retryable
    failed = [r for r in facts["runs"] if r["status"] != "completed"]
    assert [(r["run_id"], r["status"], r["status_reason"]) for r in failed
            if facts["last_frame"][r["run_id"]]["data"].get("retryable") is not True] == []

    # a completed run has exactly one (non-partial) assistant item
    assert [rid for rid, r in by_run.items() if r["status"] == "completed"
            and facts["assistant_items"].get(rid) != (1, False)] == []

    # transcripts are gap-free: seq is exactly 1..N per conversation
    gaps = {c: seqs for c, seqs in facts["transcript_seqs"].items() if seqs != list(range(1, len(seqs) + 1))}
    assert gaps == {}
    assert set(facts["transcript_seqs"]) == {o.conversation_id for o in accepted}

    # the faults had their effect: the killed RunActor's run failed retryably, the worker kill crashed runs
    victim = next(f["run_id"] for f in load.faults if f["fault"] == "kill RunActor")
    victim_outcome = next(o for o in accepted if o.run_id == victim)
    assert (victim_outcome.code, victim_outcome.retryable) == ("host.run_actor_died", True), victim_outcome
    assert by_run[victim]["status"] == "failed"
    assert any(o.code == "runner.crashed" for o in accepted), "the worker kill crashed no run"
    # ... the storage kill interrupted writes of runs that still ended with all their facts (the
    # restarted actor answered the calls Ray re-sent), on a storage actor that did restart
    storage_fault = next(f for f in load.faults if f["fault"].startswith("kill storage"))
    interrupted = storage_fault["uncommitted_runs"]
    assert [rid for rid in interrupted if rid not in by_run] == [], "an interrupted write was lost"
    assert [rid for rid in interrupted if by_run[rid]["status"] not in TERMINAL_STATUSES
            or facts["last_frame"].get(rid, {}).get("type") not in TERMINAL_FRAMES] == []
    storage = ray.get_actor("runnerhost-storage", namespace=load_app.namespace)
    assert (await storage.stats.remote())["restarted"] is True
    # ... and the Postgres restart interrupted a write the storage actor then retried (Ray exports
    # metrics every few seconds: wait for the count to arrive)
    wait_for(lambda: _grew(retries_before, db_write_retries()), timeout=60)


def db_write_retries() -> float:
    """Database writes the storage actor retried after a transient error (connection lost)."""
    return scrape("ray_runnerhost_db_retries_total", ("op",)).get(("write",), 0.0)


def _grew(before: float, now: float) -> tuple[bool, object]:
    return now > before, {"database writes retried": {"before": before, "now": now}}
