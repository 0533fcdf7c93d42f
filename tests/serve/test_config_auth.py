"""Configuration loading, API-key handling, loopback-only mode and the CLI's refusals (no Ray needed)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serve.cli import app as cli
from serve.config import ApiKey, ConfigError, Settings, hash_key, load_settings, parse_env_keys

REPO = Path(__file__).resolve().parents[2]


def test_defaults_on_a_fresh_machine(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.config_path is None
    assert list(settings.agents) == ["echo"]
    assert settings.agents["echo"].runner_id == "plugin:builtin/echo/default"
    assert (settings.server.host, settings.server.port, settings.server.max_body_bytes) == ("127.0.0.1", 8000, 1 << 20)
    host = settings.host_config()
    assert host.storage.database_url == f"sqlite+aiosqlite:///{tmp_path / '.runnerhost' / 'runnerhost.db'}"
    assert host.storage.artifact_root == str(tmp_path / ".runnerhost" / "artifacts")
    assert host.gateway_url == "http://127.0.0.1:8000/mcp"
    settings.check_bind()


def test_repo_default_file_loads(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    settings = load_settings(env={"RUNNERHOST_DATA_DIR": str(tmp_path)})
    assert settings.config_path == str(REPO / "runnerhost.toml")
    assert settings.agents["echo"].runner_config == {"mode": "echo"}
    assert not settings.api_keys
    settings.host_config()


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "rh.toml"
    cfg.write_text('[server]\nport = 9001\nhost = "127.0.0.1"\n[storage]\ndata_dir = "d"\n'
                   '[[providers.models]]\nmodel_id = "m"\nbase_url = "http://x/v1"\nmodel = "gpt"\n'
                   'api_key_env = "OPENAI_API_KEY"\n'
                   '[agents.a1]\nrunner_id = "plugin:builtin/echo/default"\nmultitask_strategy = "reject"\n')
    env = {"RUNNERHOST_PORT": "9002", "RUNNERHOST_DATABASE_URL": "postgresql+asyncpg://u@h/db",
           "RUNNERHOST_NAMESPACE": "ns1"}
    s = load_settings(cfg, env=env)
    assert s.server.port == 9002 and s.database_url == "postgresql+asyncpg://u@h/db"
    assert s.host.namespace == "ns1" and list(s.agents) == ["a1"]
    [model] = s.host_config().providers["models"]
    assert {k: model[k] for k in ("model_id", "base_url", "model", "api_key_env")} == {
        "model_id": "m", "base_url": "http://x/v1", "model": "gpt", "api_key_env": "OPENAI_API_KEY"}
    s = load_settings(cfg, env=env, overrides={"server": {"port": 9003, "host": None}})
    assert s.server.port == 9003 and s.server.host == "127.0.0.1"
    assert s.gateway_url == "http://127.0.0.1:9003/mcp"


@pytest.mark.parametrize("text,fragment", [
    ("[server\nport=1", "invalid TOML"),
    ("[server]\nprot = 1\n", "server.prot"),
    ('[agents.x]\nrunner_id = "echo"\n', "agents.x.runner_id"),
    ('[[api_keys]]\nsha256 = "plain-text-key"\n', "api_keys.0.sha256"),
])
def test_bad_config_files_are_clear_errors(tmp_path, text, fragment):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert fragment in str(info.value)
    assert "plain-text-key" not in str(info.value) or fragment == "api_keys.0.sha256"


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})


def test_env_api_keys_are_hashed_with_scopes():
    keys = parse_env_keys("admin:k-admin, ingest:k-ingest,ingest+read:k-both,plain:colon:key,,solo")
    assert [(k.scopes, k.sha256) for k in keys] == [
        (["admin"], hash_key("k-admin")), (["ingest"], hash_key("k-ingest")),
        (["ingest", "read"], hash_key("k-both")), (["admin"], hash_key("plain:colon:key")),
        (["admin"], hash_key("solo"))]
    assert "k-admin" not in repr(keys)
    s = load_settings(env={"RUNNERHOST_API_KEYS": "ingest:abc", "RUNNERHOST_CONFIG": str(REPO / "runnerhost.toml")})
    assert s.auth_enabled and s.api_keys[0].allows("ingest") and not s.api_keys[0].allows("admin")


def test_bind_beyond_loopback_needs_keys():
    with pytest.raises(ConfigError, match="refusing to bind"):
        Settings.model_validate({"server": {"host": "0.0.0.0"}}).check_bind()
    Settings.model_validate({"server": {"host": "0.0.0.0"},
                             "api_keys": [{"sha256": hash_key("k")}]}).check_bind()
    for loopback in ("127.0.0.1", "localhost", "::1"):
        Settings.model_validate({"server": {"host": loopback}}).check_bind()


def test_cli_refuses_open_bind_and_hashes_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    refused = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "8999"], env={"RUNNERHOST_API_KEYS": ""})
    assert refused.exit_code == 2 and "refusing to bind" in refused.output
    hashed = runner.invoke(cli, ["hash-key", "s3cret", "--scope", "ingest"])
    assert hashed.exit_code == 0
    assert hashlib.sha256(b"s3cret").hexdigest() in hashed.output and 'scopes = ["ingest"]' in hashed.output
    fresh = runner.invoke(cli, ["hash-key"])
    assert fresh.exit_code == 0 and "rh_" in fresh.output


class StubHost:
    """Enough of a Host for routes that only list agents (auth is checked before the host is touched)."""

    live: dict = {}

    async def agents(self):
        return [{"agent_id": "echo", "version": 1, "config": {"runner_id": "plugin:builtin/echo/default"}}]

    async def runners(self):
        from protocol.manifest import RunnerDescriptor
        from runners.echo import EchoRunner
        return [RunnerDescriptor.from_manifest(EchoRunner.manifest).model_dump(mode="json")]


def _client(settings: Settings, ip: str) -> httpx.AsyncClient:
    from serve.app import create_app
    transport = httpx.ASGITransport(app=create_app(settings, host=StubHost()), client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


async def test_no_keys_means_loopback_clients_only():
    settings = Settings()
    async with _client(settings, "127.0.0.1") as c:
        assert (await c.get("/v1/agents")).status_code == 200
    async with _client(settings, "::1") as c:
        assert (await c.get("/v1/agents")).status_code == 200
    async with _client(settings, "10.1.2.3") as c:
        r = await c.get("/v1/agents")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert (await c.get("/healthz")).json()["auth"] == "loopback_only"


async def test_keys_apply_to_loopback_too():
    settings = Settings(api_keys=[ApiKey(sha256=hash_key("k1"), scopes=["read"])])
    async with _client(settings, "127.0.0.1") as c:
        assert (await c.get("/v1/agents")).status_code == 401
        assert (await c.get("/v1/agents", headers={"Authorization": "Bearer k1"})).status_code == 200
        r = await c.put("/v1/agents/x", headers={"Authorization": "Bearer k1"},
                        json={"runner_id": "plugin:builtin/echo/default"})
        assert r.status_code == 401 and "admin" in r.json()["message"]


async def test_openapi_documents_400_not_422():
    async with _client(Settings(), "127.0.0.1") as c:
        schema = (await c.get("/openapi.json")).json()
    assert "ApiKey" in schema["components"]["securitySchemes"]
    for path, item in schema["paths"].items():
        for method, op in item.items():
            assert "422" not in op["responses"], (method, path)
            if path.startswith("/v1/"):
                assert "400" in op["responses"] and "401" in op["responses"], (method, path)
                if path.startswith("/v1/platforms/"):  # platform webhooks: the platform's signature, no API key
                    assert not op.get("security"), (method, path)
                else:
                    assert op.get("security"), (method, path)
    assert "/mcp" not in schema["paths"]


def test_database_timeouts_come_from_file_and_env(tmp_path):
    config = tmp_path / "rh.toml"
    config.write_text("[storage]\nstatement_timeout_s = 12.5\npool_pre_ping = false\n")
    storage = load_settings(config, env={}).host_config().storage
    assert (storage.statement_timeout_s, storage.connect_timeout_s, storage.pool_pre_ping) == (12.5, 10.0, False)
    env = {"RUNNERHOST_DB_STATEMENT_TIMEOUT_S": "3", "RUNNERHOST_DB_CONNECT_TIMEOUT_S": "1.5",
           "RUNNERHOST_DB_POOL_PRE_PING": "on"}
    assert load_settings(config, env=env).host_config().storage.engine_options() == {
        "statement_timeout_s": 3.0, "connect_timeout_s": 1.5, "pool_pre_ping": True}
    with pytest.raises(ConfigError, match="RUNNERHOST_DB_POOL_PRE_PING"):
        load_settings(config, env={"RUNNERHOST_DB_POOL_PRE_PING": "perhaps"})


def test_runnerhost_serve_exports_a_database_password_before_ray_starts(tmp_path, monkeypatch):
    from serve.cli import export_database_url
    url = "postgresql+asyncpg://rh:s3cret-pw@db.example:5432/rh"
    config = tmp_path / "rh.toml"
    config.write_text(f'[storage]\ndatabase_url = "{url}"\n')
    monkeypatch.setenv("RUNNERHOST_DATABASE_URL", "placeholder")  # so that teardown restores "unset"
    monkeypatch.delenv("RUNNERHOST_DATABASE_URL")
    settings = load_settings(config, env={})
    with pytest.raises(ConfigError, match="password"):
        settings.deployable()  # not exported yet: it could only travel by value
    export_database_url(settings)  # what `runnerhost serve` does before ray.init (workers inherit it)
    deployed = settings.deployable()
    assert "s3cret-pw" not in deployed.model_dump_json()
    assert deployed.host_config().storage.resolve_database_url() == url
    plain = load_settings(env={"RUNNERHOST_DATA_DIR": str(tmp_path)})  # no password: by value is fine
    assert plain.deployable() is plain


def test_retention_section_and_env(tmp_path):
    config = tmp_path / "rh.toml"
    config.write_text("[retention]\nevent_log_max_age_s = 2592000\nbatch_limit = 100\n")
    policy = load_settings(config, env={}).host_config().storage.retention
    assert (policy.event_log_max_age_s, policy.batch_limit, policy.transcript_max_age_s) == (2592000, 100, None)
    env = {"RUNNERHOST_RETENTION_EVENT_LOG_MAX_AGE_S": "off", "RUNNERHOST_RETENTION_TRANSCRIPT_MAX_AGE_S": "86400",
           "RUNNERHOST_RETENTION_WORKSPACE_ROOTS": "/srv/a:/srv/b"}
    policy = load_settings(config, env=env).host_config().storage.retention
    assert (policy.event_log_max_age_s, policy.transcript_max_age_s) == (None, 86400)
    assert policy.workspace_roots == ["/srv/a", "/srv/b"]
    with pytest.raises(ConfigError, match="RUNNERHOST_RETENTION_SESSION_IDLE_S"):
        load_settings(config, env={"RUNNERHOST_RETENTION_SESSION_IDLE_S": "a week"})
