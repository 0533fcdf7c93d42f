"""SIGKILL of the whole server under load, then a restart on the same Postgres.

``runnerhost serve`` runs as a subprocess with its own Ray (every Ray process it starts is its
descendant). Clients submit events — streamed and ``?wait=false``, fast and slow, on an
``enqueue`` agent too so runs queue behind each other — and once enough were answered 2xx and
runs are in flight (the ledger shows ``running`` and ``created`` rows), every process of that
server is SIGKILLed at once. A new server starts on the same database. Then:

* after the documented grace (``RUNNERHOST_HOST_DEAD_AFTER_S`` + a sweep period), no run is left
  ``created`` or ``running`` — they end ``failed host.lost`` (retryable);
* every event that got a 2xx has exactly one EventLog row and exactly one run;
* every conversation's transcript is gap-free (seq 1..N);
* re-sending each of those events starts no second run: the answer names the original run
  (``run.duplicate``) and the run count does not move.

The scenario is checked to have happened (runs were in flight when the kill landed); if it did
not, the test fails rather than passing trivially.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import pg_database
from tests.serve.conftest import free_port

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "runnerhost"
DEAD_AFTER_S = 3.0
SWEEP_S = 1.0
CONVERSATIONS = 12
ECHO = "plugin:builtin/echo/default"

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
database_url = "{database_url}"
data_dir = "{data_dir}"

[host]
namespace = "rh-crash"
stale_run_check_s = {sweep}

[pools]
run_actors_min = 2
run_actors_max = 6
workers_min = 0
workers_max = 1
node_run_slots = 6

[agents.fast]
runner_id = "{echo}"
runner_config = {{ chunks = 2, delay_s = 0.05 }}

[agents.slow]
runner_id = "{echo}"
runner_config = {{ chunks = 3, delay_s = 1.5 }}

[agents.queueing]
runner_id = "{echo}"
runner_config = {{ chunks = 2, delay_s = 0.5 }}
multitask_strategy = "enqueue"
"""


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RUNNERHOST_"))}
    env.update({"NO_COLOR": "1", "COLUMNS": "200", "TERM": "dumb",
                "RUNNERHOST_HOST_DEAD_AFTER_S": str(DEAD_AFTER_S), "RUNNERHOST_HOST_HEARTBEAT_S": "0.5"})
    return env


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.add(pid)
        except OSError:
            pass
    return out


class Server:
    def __init__(self, tmp: Path, database_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp / "crash.toml"
        self.config.write_text(CONFIG.format(port=self.port, database_url=database_url, data_dir=tmp / "data",
                                             sweep=SWEEP_S, echo=ECHO))
        self.log = tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([str(BIN), "serve", "--config", str(self.config)], cwd=REPO,
                                         env=server_env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, f"serve exited:\n{self.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"serve never became ready:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.5)

    def sigkill_everything(self) -> int:
        """SIGKILL the server and every process of its Ray session at once; how many died."""
        assert self.proc is not None
        victims = descendants(self.proc.pid)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(victims) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(victims), f"survived SIGKILL: {alive(victims)}"
        return len(victims)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.sigkill_everything()


def body(i: int, event_id: str) -> dict:
    agent = ("slow", "fast", "queueing")[i % 3]
    return {"agent_id": agent, "event": {
        "event_id": event_id, "event_type": "message.received", "conversation_id": f"crash-{i % CONVERSATIONS}",
        "actor": {"actor_type": "user", "actor_id": "u1"}, "input": {"text": f"message {i}"}}}


async def submit(client: httpx.AsyncClient, i: int, answered: dict[str, dict]) -> None:
    event_id = f"crash-{i}-{uuid.uuid4().hex[:8]}"
    wait = i % 2 == 0
    try:
        async with client.stream("POST", "/v1/events", params={} if wait else {"wait": "false"},
                                 json=body(i, event_id)) as r:
            if 200 <= r.status_code < 300:
                answered[event_id] = {"i": i, "status": r.status_code}  # the 2xx is the promise
            async for line in r.aiter_lines():
                if line.strip() and event_id in answered:
                    answered[event_id].setdefault("run_id", json.loads(line).get("run_id"))
    except httpx.HTTPError:
        pass  # the server died under this request: whatever it answered so far stands


async def test_sigkill_of_the_whole_server_under_load_then_restart(tmp_path):
    async with pg_database() as database_url:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        server = Server(tmp_path, database_url)
        server.start()
        answered: dict[str, dict] = {}
        conn = await asyncpg.connect(dsn)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                tasks = [asyncio.create_task(submit(client, i, answered)) for i in range(60)]
                # the kill lands when runs are provably in flight: some running, some queued
                deadline = time.monotonic() + 60
                while True:
                    open_runs = dict(await conn.fetch(
                        "select status, count(*) from agent_run where status in ('created', 'running') "
                        "group by status"))
                    if len(answered) >= 20 and open_runs.get("running", 0) and open_runs.get("created", 0):
                        break
                    assert time.monotonic() < deadline, f"no load in flight: {open_runs}, {len(answered)} answered"
                    await asyncio.sleep(0.1)
                killed = server.sigkill_everything()
                await asyncio.gather(*tasks)
            in_flight = await conn.fetchval("select count(*) from agent_run where status in ('created', 'running')")
            assert in_flight > 0, "the kill landed after every run had ended: the scenario did not happen"

            restarted = Server(tmp_path, database_url)
            restarted.start()
            try:
                deadline = time.monotonic() + DEAD_AFTER_S + 4 * SWEEP_S + 20
                while await conn.fetchval("select count(*) from agent_run where status in ('created', 'running')"):
                    assert time.monotonic() < deadline, "runs of the killed server were never finalized"
                    await asyncio.sleep(0.5)
                lost = await conn.fetch("select status, status_reason, count(*) n from agent_run "
                                        "where status_reason = 'host.lost' group by 1, 2")
                assert lost and all(r["status"] == "failed" for r in lost)

                for event_id, seen in answered.items():
                    rows = await conn.fetchval("select count(*) from event_log where event_id = $1", event_id)
                    runs = await conn.fetchval("select count(*) from agent_run where event_id = $1", event_id)
                    assert (rows, runs) == (1, 1), (event_id, seen, rows, runs)
                for c in range(CONVERSATIONS):
                    seqs = [r["seq"] for r in await conn.fetch(
                        "select seq from transcript where conversation_id = $1 order by seq", f"crash-{c}")]
                    assert seqs == list(range(1, len(seqs) + 1)), (c, seqs)

                runs_before = await conn.fetchval("select count(*) from agent_run")
                async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as client:
                    for event_id, seen in answered.items():
                        r = await client.post("/v1/events", params={"wait": "false"}, json=body(seen["i"], event_id))
                        assert r.status_code == 202 and r.json()["type"] == "run.duplicate", r.text
                        assert r.headers["X-RunnerHost-Duplicate"] == "true"
                        original = await conn.fetchval("select run_id from agent_run where event_id = $1", event_id)
                        assert r.json()["run_id"] == original
                assert await conn.fetchval("select count(*) from agent_run") == runs_before  # no second run
            finally:
                restarted.stop()
        finally:
            await conn.close()
            server.stop()
    print(f"\ncrash/restart: {len(answered)} events answered 2xx before the kill, {in_flight} runs in flight, "
          f"{killed} processes SIGKILLed, {sum(r['n'] for r in lost)} runs finalized host.lost")
