"""Multi-node tests: each scenario runs in its own process (see ``scenarios.py``).

A ``ray.cluster_utils.Cluster`` cannot share a process with the session's local
Ray (``ray_session``), so ``run_scenario`` starts ``scenarios.py NAME`` with
``subprocess.run`` and returns the JSON it prints on its ``RESULT`` line.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).resolve().with_name("scenarios.py")
# Normally ~1-2 minutes; generous for a loaded 2-core machine.
SCENARIO_TIMEOUT_S = float(os.environ.get("RUNNERHOST_CLUSTER_TIMEOUT_S", "600"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: multi-node scenario on ray.cluster_utils.Cluster (subprocess)")


EXIT_CLUSTER_START = 75   # scenarios.py: the Cluster itself did not come up (overloaded machine)
ATTEMPTS = 3


def run_scenario(name: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    deadline = time.monotonic() + SCENARIO_TIMEOUT_S   # for all attempts together
    for _ in range(ATTEMPTS):
        returncode, stdout, stderr = _run(name, env, max(1.0, deadline - time.monotonic()))
        if returncode != EXIT_CLUSTER_START:
            break
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if returncode != 0 or not lines:
        pytest.fail(f"scenario {name} exited {returncode} without a result\n"
                    f"--- stderr (tail) ---\n{stderr[-4000:]}", pytrace=False)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    result["_stderr"] = stderr[-4000:]
    return result


def _run(name: str, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """The scenario in its own process group: on timeout the whole group (its raylets too) is killed."""
    proc = subprocess.Popen([sys.executable, str(SCENARIOS), name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(SCENARIOS.parents[2]),
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return -1, stdout, f"{stderr}\n[timed out after {timeout:.0f}s]"
    return proc.returncode, stdout, stderr
