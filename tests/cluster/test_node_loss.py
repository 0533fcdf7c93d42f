"""Placement and node loss on a real 3-node Ray cluster (head + 2 workers), SPEC §10-§11.

One scenario process (``scenarios.py node_loss``) does it all — one cluster start
instead of one per test — and these tests read its JSON report. Nothing is left to SPREAD's
luck: the scenario pins a harness session and RunActors to the worker it kills under load, and
RunActors and a runner worker to the one it kills while idle, so every case below happens in
every run — a test FAILS (never skips) if its scenario did not:

* storage, registry and provider actors live on the head node;
* pooled RunActors and runner workers spread over the nodes, and runs execute on worker nodes;
* a worker node is killed under load: runs it served end ``run.failed`` retryable, in the
  stream and in the ledger — a run whose RunActor died with it ``host.run_actor_died``; runs on
  other nodes complete;
* the harness session actor on the lost node is rebuilt elsewhere and resumes the external
  session id from Postgres;
* runs submitted after the loss complete on the surviving nodes;
* the other worker dies while nothing runs: no later run lands on a pool member that died with it.
"""
from __future__ import annotations

import pytest

from tests.cluster.conftest import SCENARIO_TIMEOUT_S, run_scenario

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def report() -> dict:
    return run_scenario("node_loss")


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
    assert hit, f"no run was in flight on the lost node: {report['inflight']}"
    for run in hit + [report["turn"]]:
        assert run["terminal"]["type"] == "run.failed" and run["terminal"]["retryable"] is True, run
        assert run["terminal"]["code"] in ("host.run_actor_died", "runner.crashed"), run
        assert run["ledger"] == {"status": "failed", "last_type": "run.failed", "last_retryable": True}, run


def test_a_run_whose_run_actor_died_with_the_node_is_a_failure_in_the_ledger(report):
    died = [r for r in report["inflight"] if r["run_actor"] == report["victim"]]
    assert died, f"no run had its RunActor on the lost node: {report['inflight']}"
    for run in died:
        assert run["terminal"]["code"] == "host.run_actor_died" and run["terminal"]["retryable"] is True, run
        assert run["ledger"]["status"] == "failed" and run["ledger"]["last_type"] == "run.failed", run


def test_runs_on_surviving_nodes_complete(report):
    spared = [r for r in report["inflight"] if not r["on_victim"]]
    assert spared, f"no run in flight on the surviving nodes: {report['inflight']}"
    for run in spared:
        assert run["terminal"]["type"] == "run.completed", run
        assert run["ledger"]["status"] == "completed", run


def test_a_session_on_the_lost_node_is_rebuilt_and_resumes_its_external_session(report):
    opened = report["sessions"][report["victim_conv"]]
    assert opened["node"] == report["victim"], opened     # the session did live on the lost node
    assert opened["terminal"]["type"] == "run.completed" and opened["sid"]
    assert report["turn"]["terminal"]["type"] == "run.failed"   # its turn died with the node
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
def test_the_idle_lost_node_carried_run_actors_and_a_runner_worker(report):
    idle = report["idle_loss"]
    pools = idle["pools_at_loss"]
    assert idle["victim"] in report["workers"] and idle["victim"] != report["victim"]
    assert any(node == idle["victim"] for node, _ in pools["run_actors"]), pools
    assert any(node == idle["victim"] for node, _ in pools["plugin:test/node/default"]), pools


def test_after_an_idle_node_loss_no_run_lands_on_a_dead_member(report):
    idle = report["idle_loss"]
    failed = [r for r in idle["runs"] if r["terminal"]["type"] != "run.completed"]
    assert not failed, failed
    for run in idle["runs"]:
        assert run["ledger"]["status"] == "completed", run
        assert run["worker"] != idle["victim"], run
    assert all(node is not None for pool in idle["pools_end"].values() for node, _ in pool), idle["pools_end"]
