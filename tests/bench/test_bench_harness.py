"""A quick run of the real harness (``python -m bench --quick --only peer,openloop,writes``): fresh Ray + Serve,
RunnerHost on SQLite and on Postgres, LangGraph's in-memory server, the storage actor against raw
asyncpg — then the results document is checked against the raw measurements it carries: every
headline recomputed from its windows, nothing typed in. Bounded (2–2.5 minutes on 2 busy cores, 5 at most);
run it under the Ray lock: ``flock /tmp/rh-ray.lock pytest tests/bench``.

Needs the peer's virtualenv (``make peer-venv``; ``make test`` builds it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.langgraph_server import peer_python
from bench.report import BACKENDS

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def test_a_quick_run_reports_what_it_measured(tmp_path):
    peer_python()  # a clear error (how to make the peer's venv) rather than a failed run
    readme_before = (REPO / "README.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "peer,openloop,writes", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (REPO / "README.md").read_text() == readme_before  # a partial run touches no tracked file

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert r["git_commit"] == head and isinstance(r["git_dirty"], bool) and r["quick"] is True
    assert r["conditions"]["at_start"]["loadavg"] and r["conditions"]["at_end"]["loadavg"]

    rep = r["sections"]["compare"]["reps"][0]
    lg = rep["langgraph"]["32"]
    # the peer's streams ended properly (its final state holds the echo), and its CPU is its own tree
    assert lg["completed"] > 0 and lg["errors"] == 0, lg
    assert lg["cpu"]["server_processes"] >= 1 and lg["cpu"]["by_process"].get("langgraph dev")
    for b in BACKENDS:
        w = rep[b]["closed"]["32"]
        cpu = w["cpu"]
        assert w["completed"] > 0 and w["errors"] == 0, (b, w.get("error_kinds"))
        assert cpu["server_processes"] > 5  # every process of the Ray session, not one actor
        assert cpu["foreign_cores_busy"] is not None and "before_window" in cpu
        assert cpu["server_ms_per_request"] == round(cpu["server_cpu_s"] * 1000 / w["completed"], 2)
        assert r["cpu_per_run_ms"][b] == cpu["server_ms_per_request"]
        assert r["langgraph_ratio"][b] == round(w["requests_per_s"] / lg["requests_per_s"], 4)
        assert sum(cpu["ms_per_request_by_process"].values()) == pytest.approx(cpu["server_ms_per_request"], rel=0.05)

        # the open loop ran at its fractions of the best closed-loop rate this deployment sustained
        best = max(x["requests_per_s"] for x in rep[b]["closed"].values())
        assert rep[b]["max_rate"] == best
        for key, o in rep[b]["open"].items():
            assert o["offered_rate"] == pytest.approx(best * float(key), abs=0.01)
            assert o["arrivals"] > 0 and o["errors"] == 0, (b, key, o.get("error_kinds"))
        assert r["open_loop_p99_ms"][b]["0.8"] == rep[b]["open"]["0.8"]["latency_ms"]["p99"]

    headline = [v for v in r["sections"]["writes"]["variants"] if v["frames_per_call"] == 4]
    assert len(headline) == 1
    actor, raw = headline[0]["actor"], headline[0]["raw"]
    assert actor["rows"] == actor["calls"] * 4 and actor["readback_matches"]  # read back from Postgres
    assert raw["rows"] == actor["rows"] and raw["rows_per_commit"] == round(actor["rows_per_commit"])
    assert r["write_vs_raw"] == round(actor["rows_per_s"] / raw["rows_per_s"], 4)

    checked = 0
    for t in r["targets"]:
        if t["status"] == "SKIP":
            assert t["value"] is None
            continue
        op, threshold = t["target"].split(" ")
        ok = {">=": t["value"] >= float(threshold), "<=": t["value"] <= float(threshold),
              "<": t["value"] < float(threshold), "==": t["value"] == float(threshold)}[op]
        assert t["status"] == ("PASS" if ok else "MISS"), t
        checked += 1
    assert checked >= 6
