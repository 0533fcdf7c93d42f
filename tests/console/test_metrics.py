"""Metrics: a no-op outside Ray; inside Ray, scraped values equal the ledger's counts."""
from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import ray

from store.engine import Database
from store.ledger import RunLedgerStore
from tests.console.prom import scrape, wait_for

REPO = Path(__file__).resolve().parents[2]


def test_every_call_is_a_silent_no_op_outside_ray():
    code = (
        "from actors import metrics as m\n"
        "m.run_started('a','r'); m.run_finished('a','failed','x',1.0); m.first_frame('a',0.1)\n"
        "m.admission_queue('lane',3); m.admission_wait('lane',0.2); m.storage_batch(5,0.01)\n"
        "m.pool_observed('p',size=1,leased=1,creating=0,max_size=2); m.storage_pending(1)\n"
        "m.steering('claimed'); m.gateway_call('state_get','ok'); m.delivery('telegram','sent')\n"
        "m.observe_health({'pools':[{'name':'p','size':1,'leased':0,'creating':0,'max':2,'queue_length':0}],"
        "'storage':{'pending':0}})\n"
        "import ray, sys; assert not ray.is_initialized() and not m.enabled() and m._metrics is None\n"
        "print('noop-ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "noop-ok", out.stderr[-2000:]


# (agent suffix, status, code, how many): a known mix of outcomes
MIX = [("a", "completed", "stop", 3), ("a", "failed", "runner.error", 2), ("a", "timeout", "runner.timeout", 1),
       ("b", "completed", "stop", 2), ("b", "cancelled", "run.cancelled", 1)]


@pytest.mark.ray
async def test_scraped_run_metrics_equal_the_ledger_counts(ray_session, pg_url):
    from tests.console.metrics_probe import ModelRunPath

    tag = uuid.uuid4().hex[:8]
    path = ModelRunPath.remote(pg_url)
    assert await path.enabled.remote()
    for suffix, status, code, n in MIX:
        for _ in range(n):
            assert await path.run.remote(f"run_{uuid.uuid4().hex}", f"m-{tag}-{suffix}", status, code) == status
    agents = {f"m-{tag}-a", f"m-{tag}-b"}

    database = Database(pg_url)
    try:
        ledger = []
        for agent in sorted(agents):
            async with database.transaction() as s:
                ledger += await RunLedgerStore(s).counts(by=["agent_id", "status", "status_reason"], agent_id=agent)
    finally:
        await database.dispose()
    expected = {(g["agent_id"], g["status"], g["status_reason"]): float(g["count"]) for g in ledger}
    expected_started = {a: sum(v for (ag, _, _), v in expected.items() if ag == a) for a in agents}
    assert sum(expected.values()) == sum(n for *_, n in MIX)  # the ledger saw the mix

    def check():
        finished = {k: v for k, v in scrape("ray_runnerhost_runs_finished_total",
                                            ("agent", "status", "code")).items() if k[0] in agents}
        started = {k[0]: v for k, v in scrape("ray_runnerhost_runs_started_total", ("agent",)).items()
                   if k[0] in agents}
        durations = {k: v for k, v in scrape("ray_runnerhost_run_duration_seconds_count",
                                             ("agent", "status")).items() if k[0] in agents}
        ok = finished == expected and started == expected_started and \
            sum(durations.values()) == sum(expected.values())
        return ok, {"finished": finished, "started": started, "expected": expected}

    wait_for(check, timeout=60)
    ray.kill(path)


def test_grafana_dashboard_charts_exactly_the_defined_metrics():
    import json
    import re

    from actors.metrics import _DEFINITIONS

    dashboard = json.loads((REPO / "deploy" / "grafana-runnerhost.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"ray_runnerhost_(\w+)", e)}
    used = {m if m in _DEFINITIONS else re.sub(r"_(bucket|count|sum)$", "", m) for m in used}
    assert used == set(_DEFINITIONS), (used ^ set(_DEFINITIONS))
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
