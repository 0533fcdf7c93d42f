"""The cluster Serve app (``deploy/serve.yaml`` → ``serve.cluster_app:app_builder``) on a 2-node cluster.

Deployed by the Serve controller from the import path, exactly as ``serve deploy`` and
KubeRay's ``serveConfigV2`` do, with its settings in the nodes' environment.
"""
from __future__ import annotations

import pytest

from tests.cluster.conftest import SCENARIO_TIMEOUT_S, run_scenario

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(SCENARIO_TIMEOUT_S + 60)]


@pytest.fixture(scope="module")
def report() -> dict:
    return run_scenario("serve_app")


def test_the_import_path_app_deploys_and_serves_runs_with_keys_required(report):
    assert report["app_status"] == "RUNNING", report.get("app_message")
    assert report["healthz"] == 200
    assert report["no_key"] == 401
    assert report["with_key"]["status"] == 200
    assert report["with_key"]["types"][0] == "run.started" and report["with_key"]["types"][-1] == "run.completed"


def test_ingress_replica_and_control_plane_run_on_the_head(report):
    assert report["replica_nodes"] and set(report["replica_nodes"]) == {report["head"]}
    assert set(report["control"].values()) == {report["head"]}
