"""SPEC §11: a secret raised inside a runner never reaches any log file of the Ray session —
whichever process logs it (runner worker, RunActor, host), as message, argument or traceback."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from protocol.events import EventEnvelope
from tests.actors.conftest import probe_agent
from tests.waiting import wait_until

pytestmark = pytest.mark.ray

CRASH = "plugin:test/crash/default"


def session_logs() -> Path:
    import ray
    return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"


def files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    found.append(str(path.relative_to(root)))
            except OSError:
                continue
    return found


async def test_a_secret_raised_in_a_runner_reaches_no_log_file(host, conv):
    secret = f"sk-{uuid.uuid4().hex}"
    await host.put_agent("crash-secret", probe_agent(runner=CRASH, secret=secret))
    event = EventEnvelope(event_type="message.received", conversation_id=conv, input={"text": "go"},
                          actor={"actor_type": "user", "actor_id": "u1"})
    frames = [f async for f in await host.submit(event, "crash-secret")]
    assert frames[-1]["type"] == "run.failed" and frames[-1]["data"]["code"] == "runner.error"
    assert secret not in str(frames)
    logs = session_logs()
    # the runner's failure is logged (so the scan looks at the right place) …
    await wait_until(lambda: files_containing(logs, b"runner plugin:test/crash/default failed"), timeout=10,
                     interval=0.2, what="the runner's crash to be logged at all (the scan must look at the right place)")
    # … and nowhere with the secret
    assert files_containing(logs, secret.encode()) == []


def test_every_worker_of_the_session_redacts_before_any_runnerhost_code_runs(ray_session):
    """The runtime env's worker_process_setup_hook, in a worker that never imports the actor layer."""
    import ray

    @ray.remote(num_cpus=0)
    def probe(secret: str) -> tuple[bool, str]:
        import logging
        import sys
        record = logging.getLogger("anything").makeRecord("anything", logging.ERROR, "f", 1,
                                                          "token=%s", (secret,), None)
        return "actors" in sys.modules, record.getMessage()

    secret = f"ghp_{uuid.uuid4().hex}"
    imported_actors, message = ray.get(probe.remote(secret))
    assert not imported_actors and secret not in message
