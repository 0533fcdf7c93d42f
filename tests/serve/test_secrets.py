"""Secrets over the real Serve app (SPEC §3, §11).

* Secret values in agent configuration are write-only through the API: a harness agent's ``env``
  values never come back from GET or PUT — a marker does — and a PUT that sends the marker back
  keeps the stored secret (checked in the database itself).
* The database URL's password is in no Serve checkpoint: the app reaches its database by
  environment reference (``tests.conftest.SERVE_DB_ENV``)."""
from __future__ import annotations

import uuid

import pytest

from protocol.agents import REDACTED
from store import AgentStore
from store.engine import Database
from tests.conftest import TEST_DB_PASSWORD

HARNESS = "plugin:builtin/harness/default"


def harness_agent(env: dict) -> dict:
    return {"runner_id": HARNESS, "runner_config": {"kind": "claude", "env_allow": ["HOME"], "env": env}}


async def stored_config(pg_url: str, agent_id: str) -> dict:
    db = Database(pg_url)
    try:
        async with db.transaction() as session:
            return (await AgentStore(session).get(agent_id)).config.model_dump(mode="json")
    finally:
        await db.dispose()


async def test_harness_env_secrets_are_write_only(client, serve_app, serve_pg_url):
    agent_id = f"harness-{uuid.uuid4().hex[:8]}"
    secret = f"sk-ant-{uuid.uuid4().hex}"
    put = await client.put(f"/v1/agents/{agent_id}",
                           json=harness_agent({"ANTHROPIC_API_KEY": secret, "REGION": "eu-west-1"}))
    assert put.status_code == 200, put.text
    assert secret not in put.text
    for response in (await client.get("/v1/agents", headers=serve_app.read),
                     await client.get(f"/v1/agents/{agent_id}", headers=serve_app.read)):
        assert response.status_code == 200 and secret not in response.text
    view = (await client.get(f"/v1/agents/{agent_id}", headers=serve_app.read)).json()
    env = view["config"]["runner_config"]["env"]
    assert env == {"ANTHROPIC_API_KEY": REDACTED, "REGION": REDACTED}  # names stay visible, values never

    # an edit that sends the markers back keeps the stored secrets
    edited = {**view["config"], "description": "edited"}
    again = await client.put(f"/v1/agents/{agent_id}", json=edited)
    assert again.status_code == 200, again.text
    stored = await stored_config(serve_pg_url, agent_id)
    assert stored["description"] == "edited"
    assert stored["runner_config"]["env"] == {"ANTHROPIC_API_KEY": secret, "REGION": "eu-west-1"}

    # a new value replaces a secret; a marker with nothing stored behind it is a clear 400
    rotated = f"sk-ant-{uuid.uuid4().hex}"
    edited["runner_config"] = {**edited["runner_config"], "env": {"ANTHROPIC_API_KEY": rotated, "REGION": REDACTED}}
    assert (await client.put(f"/v1/agents/{agent_id}", json=edited)).status_code == 200
    assert (await stored_config(serve_pg_url, agent_id))["runner_config"]["env"]["ANTHROPIC_API_KEY"] == rotated
    orphan = await client.put(f"/v1/agents/{agent_id}-new", json=harness_agent({"TOKEN": REDACTED}))
    assert orphan.status_code == 400 and orphan.json()["code"] == "invalid_argument"
    assert REDACTED not in str(await stored_config(serve_pg_url, agent_id))


@pytest.mark.parametrize("path", ["/v1/agents", "/v1/agents/echo"])
async def test_agents_without_secret_fields_read_unchanged(client, serve_app, path):
    body = (await client.get(path, headers=serve_app.read)).json()
    agents = body if isinstance(body, list) else [body]
    echo = [a for a in agents if a["agent_id"] == "echo"][0]
    assert echo["config"]["runner_id"] == "plugin:builtin/echo/default"
    assert REDACTED not in str(echo)


def test_the_database_password_is_in_no_serve_checkpoint(serve_app):
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list
    values = [_internal_kv_get(key, namespace=b"serve") or b"" for key in _internal_kv_list(b"", namespace=b"serve")]
    everything = b"".join(values)
    assert serve_app.settings.host.namespace.encode() in everything  # the checkpoint holds our init args
    assert TEST_DB_PASSWORD.encode() not in everything
