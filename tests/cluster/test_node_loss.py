"""Placement and node loss on a real 3-node Ray cluster (head + 2 workers), SPEC §10-§11.

One scenario process (``scenarios.py node_loss``) does it all — one cluster start
instead of one per test — and these tests read its JSON report:

* storage, registry and provider actors live on the head node;
* pooled RunActors and runner workers spread over the nodes, and runs execute on worker nodes;
* a worker node is killed under load: runs it served end ``run.failed`` retryable, in the
  stream and in the ledger; runs on other nodes complete;
* a harness session actor on the lost node is rebuilt elsewhere and resumes the external
  session id from Postgres;
* runs submitted after the loss complete on the surviving nodes.
"""
from __future__ import annotations

import pytest

from tests.cluster.conftest import SCENARIO_TIMEOUT_S, run_scenario

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def report() -> dict:
    return run_scenario("node_loss")


def _why(report: dict) -> str:
    return "\n" + report["_stderr"][-1500:]


def test_control_plane_actors_live_on_the_head(report):
    assert report["control"] == {"storage": report["head"], "registry": report["head"],
                                 "providers": report["head"]}


def test_pooled_actors_spread_and_runs_execute_on_worker_nodes(report):
    assert report["warmup"]["terminals"] == ["run.completed"] * 6
    workers = set(report["workers"])
    pooled = report["pools_before"]
    run_actor_nodes = {node for node, _ in pooled["run_actors"]}
    runner_nodes = {node for node, _ in pooled["plugin:test/node/default"]}
    assert len(run_actor_nodes | runner_nodes) >= 2, pooled  # spread, not all on one node
    assert workers & (run_actor_nodes | runner_nodes), pooled
    # where the runs' RunActors / runner workers actually were: at least one part on a worker node
    executed = set(report["warmup"]["run_nodes"]) | run_actor_nodes
    assert executed & workers, report["warmup"]


def test_runs_served_by_the_lost_node_are_recorded_retryable_failures(report):
    victim = report["victim"]
    assert victim in report["workers"] and victim not in report["alive_nodes"]
    hit = [r for r in report["inflight"] if r["on_victim"]]
    turn = report.get("turn")
    assert hit or turn, "nothing was running on the lost node"
    for run in hit + ([turn] if turn else []):
        assert run["terminal"]["type"] == "run.failed" and run["terminal"]["retryable"] is True, run
        assert run["terminal"]["code"] in ("host.run_actor_died", "runner.crashed"), run
        assert run["ledger"] == {"status": "failed", "last_type": "run.failed", "last_retryable": True}, run


def test_runs_on_surviving_nodes_complete(report):
    spared = [r for r in report["inflight"] if not r["on_victim"]]
    for run in spared:
        assert run["terminal"]["type"] == "run.completed", run
        assert run["ledger"]["status"] == "completed", run


def test_a_session_on_the_lost_node_is_rebuilt_and_resumes_its_external_session(report):
    if report["victim_conv"] is None:
        pytest.skip("no harness session landed on a worker node in this run (SPREAD put them all on the head)")
    opened = report["sessions"][report["victim_conv"]]
    assert opened["terminal"]["type"] == "run.completed" and opened["sid"]
    assert opened["node"] == report["victim"]
    resumed = report["resumed"]
    assert resumed["terminal"]["type"] == "run.completed", resumed
    assert resumed["resume_arg"] == opened["sid"]          # --resume <the id stored in Postgres>
    assert resumed["node"] in report["alive_nodes"] and resumed["node"] != report["victim"]


def test_new_runs_after_the_loss_complete_on_surviving_nodes(report):
    new = report["new_runs"]
    failed = [r for r in new if r["terminal"]["type"] != "run.completed"]
    assert not failed, (f"{len(failed)}/{len(new)} runs submitted after the node loss failed — pools still "
                        f"held dead members: {report['pools_after_loss']}\n{failed}")
    for run in new:
        assert run["worker"] in report["alive_nodes"], run
        assert run["ledger"]["status"] == "completed", run


# -- an idle node loss: nothing in flight notices it ----------------------------------------------
def _idle(report: dict) -> dict:
    idle = report["idle_loss"]
    on_victim = [n for pool in idle["pools_at_loss"].values() for n, _ in pool if n == idle["victim"]]
    if not on_victim:
        pytest.skip("no pool member lived on the second lost node in this run")
    return idle


def test_after_an_idle_node_loss_no_run_lands_on_a_dead_member(report):
    idle = _idle(report)
    failed = [r for r in idle["runs"] if r["terminal"]["type"] != "run.completed"]
    assert not failed, failed
    assert all(node is not None for pool in idle["pools_end"].values() for node, _ in pool), idle["pools_end"]


def test_a_run_failed_on_a_dead_run_actor_is_still_in_the_ledger(report):
    idle = _idle(report)
    died = [r for r in idle["runs"] if r["terminal"]["code"] == "host.run_actor_died"]
    if not died:
        pytest.skip("no run leased a dead RunActor in this run")
    for run in died:
        assert run["ledger"]["status"] == "failed", run
