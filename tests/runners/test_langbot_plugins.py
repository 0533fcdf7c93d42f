"""LangBot plugin directories loaded by configuration (``[[runners.langbot_plugins]]``), and
configured runners in discovery (``extra_runners`` keys checked, labelled ``config``).

The last test runs a plugin directory loaded by config for three turns end to end on local
Ray (RegistryActor discovery → RunnerWorker → RunActor → Postgres); it takes the shared Ray
lock like every Ray test.
"""
from __future__ import annotations

import shutil
import textwrap
import uuid
from pathlib import Path

import langbot_plugin  # noqa: F401  (the dev extra: a missing SDK fails these tests, never skips them)
import pytest

from actors.core.discovery import discover, load_target
from protocol.logs import SETUP_HOOK
from runners.langbot_sdk.plugins import (
    configured_runners,
    load_plugin_target,
    parse_plugin_target,
    plugin_target,
    resolve_plugin_dir,
)
from serve.config import ConfigError, load_settings

PLUGIN = Path(__file__).resolve().parents[1] / "fixtures" / "langbot_plugins" / "turn-counter"
RUNNER_ID = "plugin:acme/turn-counter/default"


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "runnerhost.toml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


# -- configuration -------------------------------------------------------------------------------

def test_a_plugin_directory_in_the_config_becomes_a_configured_runner(tmp_path):
    settings = load_settings(write_config(tmp_path, f"""
        [[runners.langbot_plugins]]
        path = "{PLUGIN}"
        runners = ["default"]
    """), env={})
    runners = settings.host_config().extra_runners
    assert runners == {RUNNER_ID: plugin_target(PLUGIN, RUNNER_ID)}
    assert settings.runtime_env() == {"py_modules": [str(PLUGIN)],  # shipped to every Ray node
                                      "worker_process_setup_hook": SETUP_HOOK}
    # all Runner components when `runners` is left out; nothing to ship without plugins
    everything = load_settings(write_config(tmp_path, f'[[runners.langbot_plugins]]\npath = "{PLUGIN}"\n'), env={})
    assert set(everything.host_config().extra_runners) == {RUNNER_ID}
    assert load_settings(write_config(tmp_path, "[server]\nport = 8001\n"), env={}).runtime_env() == {
        "worker_process_setup_hook": SETUP_HOOK}


@pytest.mark.parametrize("body, message", [
    ('[[runners.langbot_plugins]]\npath = "{missing}"\n', "not a LangBot plugin directory"),
    ('[[runners.langbot_plugins]]\npath = "{plugin}"\nrunners = ["nope"]\n', "no Runner component named ['nope']"),
    ('[[runners.langbot_plugins]]\npath = "{plugin}"\nbogus = 1\n', "Extra inputs are not permitted"),
])
def test_bad_plugin_entries_fail_the_config_clearly(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(write_config(tmp_path, body.format(missing=tmp_path / "absent", plugin=PLUGIN)), env={})


def test_the_same_runner_configured_twice_is_refused(tmp_path):
    settings = load_settings(write_config(tmp_path, f"""
        [host]
        extra_runners = {{ "{RUNNER_ID}" = "tests.actors.probe_runners:ProbeRunner" }}
        [[runners.langbot_plugins]]
        path = "{PLUGIN}"
    """), env={})
    with pytest.raises(ConfigError, match="configured twice"):
        settings.host_config()


# -- targets -----------------------------------------------------------------------------------------

def test_plugin_targets_load_once_per_process_and_check_the_runner_id():
    target = plugin_target(PLUGIN, RUNNER_ID)
    assert parse_plugin_target(target) == (str(PLUGIN), RUNNER_ID, "default")
    cls = load_target(target)
    assert cls is load_plugin_target(target) and cls.manifest.id == RUNNER_ID
    assert cls.manifest.permissions.storage == ["plugin"] and cls.manifest.permissions.history == ["page"]
    with pytest.raises(ValueError, match="not plugin:acme/other/default"):
        load_plugin_target(plugin_target(PLUGIN, "plugin:acme/other/default"))
    with pytest.raises(ValueError):
        parse_plugin_target("langbot-plugin:/x#default")


def test_a_node_without_the_path_finds_the_copy_the_runtime_env_unpacked(tmp_path):
    """Ray's py_modules unpacks a shipped directory under its own name on a sys.path entry."""
    unpacked = tmp_path / "_ray_pkg_0123" / PLUGIN.name
    shutil.copytree(PLUGIN, unpacked)
    elsewhere = f"/nonexistent/origin/{PLUGIN.name}"
    assert resolve_plugin_dir(elsewhere, search=[str(tmp_path / "other"), str(unpacked.parent)]) == unpacked
    with pytest.raises(ValueError, match="runtime env"):
        resolve_plugin_dir(elsewhere, search=[str(tmp_path / "other")])
    assert resolve_plugin_dir(str(PLUGIN), search=[]) == PLUGIN


def test_configured_runners_names_ids_from_the_plugin_manifest():
    assert configured_runners(PLUGIN) == {RUNNER_ID: plugin_target(PLUGIN, RUNNER_ID)}
    assert configured_runners(PLUGIN, []) == {}


# -- discovery --------------------------------------------------------------------------------------

def test_discovery_labels_configured_runners_and_checks_their_keys():
    specs, warnings = discover({
        RUNNER_ID: plugin_target(PLUGIN, RUNNER_ID),
        "plugin:test/probe/default": "tests.actors.probe_runners:ProbeRunner",
        "plugin:acme/alias/default": "tests.actors.probe_runners:ProbeRunner",  # key ≠ manifest id
    }, include_entry_points=False)
    assert specs[RUNNER_ID].descriptor.source == "config"
    assert specs["plugin:test/probe/default"].descriptor.source == "config"
    assert specs["plugin:builtin/echo/default"].descriptor.source == "builtin"
    assert "plugin:acme/alias/default" not in specs
    assert any("configured as 'plugin:acme/alias/default'" in w for w in warnings)


# -- end to end on Ray -----------------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.timeout(240)
async def test_a_plugin_directory_loaded_by_config_runs_three_turns(ray_session, pg_url, tmp_path):
    from actors.host import Host
    from protocol.events import EventEnvelope

    agent = f"plugin-counter-{uuid.uuid4().hex[:8]}"  # the session's database already has other agents
    settings = load_settings(write_config(tmp_path, f"""
        [host]
        namespace = "rh-plugins-{uuid.uuid4().hex[:8]}"
        stale_run_check_s = 0
        [storage]
        database_url = "{pg_url}"
        data_dir = "{tmp_path / 'data'}"
        [pools]
        run_actors_min = 1
        run_actors_max = 2
        workers_min = 1
        workers_max = 1
        health_check_s = 0
        [[runners.langbot_plugins]]
        path = "{PLUGIN}"
        runners = ["default"]
        [agents.{agent}]
        runner_id = "{RUNNER_ID}"
    """), env={})
    host = await Host.start(settings.host_config())
    try:
        runners = {r["id"]: r for r in await host.runners()}
        assert runners[RUNNER_ID]["source"] == "config"
        conv = f"conv-{uuid.uuid4().hex[:8]}"
        replies = []
        for text in ("one", "two", "three"):
            event = EventEnvelope(event_type="message.received", conversation_id=conv,
                                  actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text})
            frames = [f async for f in await host.submit(event, agent)]
            assert frames[-1]["type"] == "run.completed", frames[-1]
            replies.append(next(f for f in frames if f["type"] == "message.completed")["data"]["message"]["content"])
        assert replies == ["Hello! turn 1: one (history: 1 items)", "Hello! turn 2: two (history: 3 items)",
                           "Hello! turn 3: three (history: 5 items)"]
        stored = await host.read("kv_get", area="plugin", namespace=RUNNER_ID, key="last-input")
        assert stored == {"encoding": "base64", "data": "dGhyZWU="}  # plugin storage is on by default
    finally:
        await host.close()
