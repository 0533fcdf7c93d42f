"""The deployment files and the cluster app builder, checked without starting Ray.

* ``cluster.yaml`` passes the Ray cluster launcher's own schema (and its on-prem variant
  passes the local provider's preparation);
* ``deploy/serve.yaml`` and the ``serveConfigV2`` of ``deploy/rayservice.yaml`` pass Serve's
  schema and name the same, importable application builder;
* ``serve.cluster_app`` refuses to serve a cluster without API keys or without Postgres,
  and builds the real ingress from the environment otherwise;
* ``actors.placement`` pins the control plane to the head only when there is a head resource;
* every node type of ``cluster.yaml`` and every group of ``deploy/rayservice.yaml`` declares its
  ``runnerhost_run_slot`` resources by the rule of ``placement.run_slots_for_memory``, in the form
  the autoscaler reads (the launcher's validated config; KubeRay's CR-to-autoscaler conversion).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

import actors.placement as placement
from serve.config import ConfigError, hash_key

REPO = Path(__file__).resolve().parents[2]
KEY = "rh-cluster-test-key"


def load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


# -- cluster.yaml ----------------------------------------------------------------------------
def launcher_view(config: dict) -> dict:
    from ray.autoscaler._private.util import fillout_defaults, merge_setup_commands, validate_config
    filled = merge_setup_commands(fillout_defaults(config))
    validate_config(filled)
    return filled


def test_cluster_yaml_is_a_valid_launcher_config_with_head_and_autoscaling_workers():
    config = load("cluster.yaml")
    filled = launcher_view(config)
    types = filled["available_node_types"]
    worker = types["ray.worker.runners"]
    assert filled["head_node_type"] == "ray.head.default" and set(types) == {"ray.head.default",
                                                                             "ray.worker.runners"}
    assert 0 < worker["min_workers"] < worker["max_workers"] <= filled["max_workers"]


def test_cluster_yaml_installs_the_mounted_checkout_and_deploys_the_app_with_env_settings():
    config = load("cluster.yaml")
    assert config["file_mounts"]["~/runnerhost"] == "."
    assert "python3 -m pip install -e ~/runnerhost" in config["setup_commands"]
    for command in [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
                    if "ray start" in c or "serve deploy" in c or "runnerhost" in c]:
        assert ". ~/runnerhost.env" in command, command   # RUNNERHOST_* exported before Ray / Serve
    head = " ".join(config["head_start_ray_commands"])
    assert "serve deploy ~/runnerhost/deploy/serve.yaml" in head and "runnerhost migrate" in head
    assert "RUNNERHOST_API_KEYS" in (REPO / "cluster.yaml").read_text()


def test_cluster_yaml_on_prem_variant_prepares_with_the_local_provider():
    from ray.autoscaler._private.local.config import prepare_local
    config = copy.deepcopy(load("cluster.yaml"))
    del config["available_node_types"], config["head_node_type"]
    config.update(provider={"type": "local", "head_ip": "10.0.0.10", "worker_ips": ["10.0.0.11", "10.0.0.12"]},
                  auth={"ssh_user": "ubuntu"}, min_workers=1, max_workers=2, head_setup_commands=[])
    prepared, _ = prepare_local(config)
    node_type = launcher_view(prepared)["available_node_types"]["local.cluster.node"]
    assert (node_type["min_workers"], node_type["max_workers"]) == (1, 2)


#: Memory of the instance types cluster.yaml names (the launcher cannot know it offline).
INSTANCE_MEMORY = {"m5.xlarge": 16 * 2**30}


def test_cluster_yaml_node_types_declare_run_slots_by_the_memory_rule():
    filled = launcher_view(load("cluster.yaml"))
    for name, node_type in filled["available_node_types"].items():
        memory = INSTANCE_MEMORY[node_type["node_config"]["InstanceType"]]
        slots = node_type["resources"].get(placement.RUN_SLOT_RESOURCE)
        assert slots == placement.run_slots_for_memory(memory), (name, slots)
    # the autoscaler may add workers for that demand
    worker = filled["available_node_types"]["ray.worker.runners"]
    assert worker["max_workers"] > worker["min_workers"]


def test_the_slot_rule_matches_what_a_local_node_declares(monkeypatch):
    assert placement.run_slots_for_memory(16 * 2**30) == 61 and placement.run_slots_for_memory(4 * 2**30) == 15
    assert placement.run_slots_for_memory(2**20) == 1          # a tiny node still offers one
    assert placement.node_run_slots(7) == 7                    # configured wins
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert placement.node_run_slots(0) == placement.run_slots_for_memory(total)
    assert placement.local_ray_resources(5) == {placement.RUN_SLOT_RESOURCE: 5.0}
    assert placement.run_slot_claim() == {"resources": {placement.RUN_SLOT_RESOURCE: 1}}


def test_rayservice_groups_declare_run_slots_the_autoscaler_reads():
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
    spec = load("deploy/rayservice.yaml")["spec"]["rayClusterConfig"]
    config = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": "runnerhost", "namespace": "default"},
                                                     "spec": copy.deepcopy(spec)})
    types = config["available_node_types"]
    assert len(types) == 1 + len(spec["workerGroupSpecs"])
    for name, node_type in types.items():
        resources = node_type["resources"]
        assert resources.get(placement.RUN_SLOT_RESOURCE) == placement.run_slots_for_memory(resources["memory"]), \
            (name, resources)
    [group] = spec["workerGroupSpecs"]
    assert types[group["groupName"]]["max_workers"] > types[group["groupName"]]["min_workers"]


# -- Serve configs ---------------------------------------------------------------------------
def serve_configs() -> dict[str, dict]:
    service = load("deploy/rayservice.yaml")
    return {"deploy/serve.yaml": load("deploy/serve.yaml"),
            "rayservice serveConfigV2": yaml.safe_load(service["spec"]["serveConfigV2"])}


@pytest.mark.parametrize("name", ["deploy/serve.yaml", "rayservice serveConfigV2"])
def test_serve_configs_validate_and_import_the_app_builder(name):
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    from serve.cluster_app import app_builder
    schema = ServeDeploySchema.model_validate(serve_configs()[name])
    [application] = schema.applications
    assert application.import_path == "serve.cluster_app:app_builder" and application.route_prefix == "/"
    assert import_attr(application.import_path) is app_builder
    assert schema.http_options.host == "0.0.0.0"


def test_rayservice_has_head_and_worker_groups_with_settings_from_a_secret():
    service = load("deploy/rayservice.yaml")
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    cluster = service["spec"]["rayClusterConfig"]
    [group] = cluster["workerGroupSpecs"]
    assert group["minReplicas"] < group["maxReplicas"] and cluster["enableInTreeAutoscaling"] is True
    containers = cluster["headGroupSpec"]["template"]["spec"]["containers"] + group["template"]["spec"]["containers"]
    for container in containers:
        assert container["envFrom"] == [{"secretRef": {"name": "runnerhost-secrets"}}]
        assert "env" not in container   # no secret values inline
    assert "stringData" not in (REPO / "deploy/rayservice.yaml").read_text()


# -- serve.cluster_app -----------------------------------------------------------------------
PG = "postgresql+asyncpg://u:p@db.example:5432/rh"


def test_cluster_settings_refuse_a_cluster_without_api_keys():
    from serve.cluster_app import cluster_settings
    with pytest.raises(ConfigError, match="RUNNERHOST_API_KEYS"):
        cluster_settings({}, env={"RUNNERHOST_DATABASE_URL": PG})


def test_cluster_settings_refuse_sqlite_unless_allowed(tmp_path):
    from serve.cluster_app import cluster_settings
    env = {"RUNNERHOST_API_KEYS": KEY, "RUNNERHOST_DATA_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="Postgres"):
        cluster_settings({}, env=env)
    assert cluster_settings({"allow_sqlite": True}, env=env).database_url.startswith("sqlite")


def test_cluster_settings_come_from_the_environment():
    from serve.cluster_app import cluster_settings
    settings = cluster_settings({"replicas": 2}, env={"RUNNERHOST_API_KEYS": f"ingest+read:{KEY}",
                                                      "RUNNERHOST_DATABASE_URL": PG})
    assert settings.database_url == PG and settings.server.host == "0.0.0.0" and settings.server.replicas == 2
    [key] = settings.api_keys
    assert key.sha256 == hash_key(KEY) and key.scopes == ["ingest", "read"]
    assert KEY not in settings.model_dump_json()   # only the digest travels to the replicas


async def test_the_import_path_app_migrates_and_binds_the_ingress(pg_url, monkeypatch):
    import serve.cluster_app as cluster_app
    from ray.serve.deployment import Application
    from serve.deployment import DEPLOYMENT_NAME
    monkeypatch.setenv("RUNNERHOST_API_KEYS", KEY)
    monkeypatch.setenv("RUNNERHOST_DATABASE_URL", pg_url)
    app = cluster_app.app   # module attribute, built on access: what `import_path: serve.cluster_app:app` gets
    assert isinstance(app, Application)
    assert app._bound_deployment.name == DEPLOYMENT_NAME
    bound = app._bound_deployment.init_args[0]
    assert bound["storage"]["database_url"] == pg_url and bound["api_keys"][0]["sha256"] == hash_key(KEY)
    # replicas own the host's pools and drive its runs: on the head unless told otherwise
    options = app._bound_deployment.ray_actor_options
    assert options["resources"] == {"node:__internal_head__": 0.001} and options["num_cpus"] == 0
    spread = cluster_app.app_builder({"spread_ingress": True, "migrate": False})
    assert "resources" not in (spread._bound_deployment.ray_actor_options or {})


# -- actors.placement ------------------------------------------------------------------------
def test_control_plane_pins_to_the_head_resource_only_when_the_cluster_has_one(monkeypatch):
    import ray
    assert placement.head_pin() == {"resources": {"node:__internal_head__": 0.001}}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, placement.HEAD_RESOURCE: 1.0})
    assert placement.control_plane_options() == {"resources": {"node:__internal_head__": 0.001}}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    assert placement.control_plane_options() == {}

    def not_connected():
        raise RuntimeError("Ray has not been started yet")
    monkeypatch.setattr(ray, "cluster_resources", not_connected)
    assert placement.control_plane_options() == {}


def test_pools_and_sessions_spread():
    assert placement.pool_options(True) == {"scheduling_strategy": "SPREAD"}
    assert placement.pool_options(False) == {}
    assert placement.session_options() == {"scheduling_strategy": "SPREAD"}


def test_a_database_password_travels_to_replicas_and_actors_by_environment_reference(monkeypatch, tmp_path):
    """Serve checkpoints deployment init args and Ray keeps actor args: the password goes in neither."""
    import json

    from serve.cluster_app import cluster_settings
    from serve.config import Settings
    from serve.deployment import build_app
    monkeypatch.setenv("RUNNERHOST_API_KEYS", KEY)
    monkeypatch.setenv("RUNNERHOST_DATABASE_URL", PG)
    app = build_app(cluster_settings({}))
    bound = app._bound_deployment.init_args[0]
    assert "u:p@" not in json.dumps(bound)
    assert bound["storage"]["database_url_env"] == "RUNNERHOST_DATABASE_URL"
    storage = Settings.model_validate(bound).host_config().storage  # what a replica hands the storage actor
    assert "u:p@" not in json.dumps(storage.model_dump())
    assert storage.resolve_database_url() == PG  # read from the process's own environment
    # a password only in the config file cannot reach the nodes without travelling by value: refused
    config = tmp_path / "rh.toml"
    config.write_text(f'[storage]\ndatabase_url = "{PG}"\n')
    monkeypatch.delenv("RUNNERHOST_DATABASE_URL")
    with pytest.raises(ConfigError, match="password"):
        cluster_settings({"config": str(config)})
