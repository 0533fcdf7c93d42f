"""The configuration version of the control-plane actors (plain functions, no Ray started): stable,
sensitive to what the actor is built from, blind to what it is not, and never made of a secret."""
from __future__ import annotations

from actors.control_plane import config_version
from actors.host_config import StorageConfig
from actors.storage_actor import storage_version


def test_the_version_ignores_key_order_and_follows_every_value():
    assert config_version({"a": 1, "b": {"c": [1, 2]}}) == config_version({"b": {"c": [1, 2]}, "a": 1})
    assert config_version({"a": 1}) != config_version({"a": 2})


def test_the_storage_version_follows_the_actors_config_not_the_hosts_retention(monkeypatch):
    base = StorageConfig(database_url_env="RH_TEST_DB_URL", artifact_root="/tmp/a")
    assert storage_version(base) == storage_version(base.model_copy())
    assert storage_version(base) != storage_version(base.model_copy(update={"max_delay_ms": 7.0}))
    assert storage_version(base) != storage_version(base.model_copy(update={"database_url_env": "OTHER"}))
    retention = base.retention.model_copy(update={"interval_s": base.retention.interval_s + 1})
    assert storage_version(base) == storage_version(base.model_copy(update={"retention": retention}))
    # the secret is referenced by name: its value (which may change under the same name) is not digested
    monkeypatch.setenv("RH_TEST_DB_URL", "postgresql+asyncpg://u:one@h/db")
    first = storage_version(base)
    monkeypatch.setenv("RH_TEST_DB_URL", "postgresql+asyncpg://u:two@h/db")
    assert storage_version(base) == first
