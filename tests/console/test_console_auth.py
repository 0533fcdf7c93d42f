"""The console's access rules without Ray: API keys as for the API, loopback-only without keys."""
from __future__ import annotations

import httpx
import pytest

from serve.app import create_app
from serve.config import ApiKey, Settings, hash_key


def client(app, ip: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://rh")


@pytest.fixture
def open_app():
    return create_app(Settings(), host=object())  # no keys; no route below touches the host


@pytest.fixture
def keyed_app():
    return create_app(Settings(api_keys=[ApiKey(name="ops", sha256=hash_key("k-read"), scopes=["read"])]),
                      host=object())


async def test_without_keys_only_loopback_gets_the_console(open_app):
    async with client(open_app, "127.0.0.1") as c:
        page = await c.get("/ui/")
        assert page.status_code == 200 and "RunnerHost console" in page.text
        me = (await c.get("/v1/console/whoami")).json()
        assert me["auth"] == "loopback_only" and me["scopes"] == ["admin"]
    async with client(open_app, "10.1.2.3") as c:
        for path in ("/ui", "/ui/", "/ui/console.js", "/v1/console/whoami"):
            r = await c.get(path)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", path


async def test_with_keys_the_bundle_is_open_and_the_data_needs_a_key(keyed_app):
    async with client(keyed_app, "10.1.2.3") as c:
        assert (await c.get("/ui/")).status_code == 200  # the bundle holds no data
        assert (await c.get("/v1/console/whoami")).status_code == 401
        me = await c.get("/v1/console/whoami", headers={"Authorization": "Bearer k-read"})
        assert me.json() == {"name": "ops", "scopes": ["read"], "auth": "api_keys"}
        assert (await c.get("/v1/console/whoami", headers={"Authorization": "Bearer wrong"})).status_code == 401


async def test_new_routes_are_in_the_openapi_document(keyed_app):
    async with client(keyed_app, "127.0.0.1") as c:
        paths = (await c.get("/openapi.json")).json()["paths"]
    for path in ("/v1/stats/runs", "/v1/runs/{run_id}/artifacts", "/v1/runs/{run_id}/artifacts/{artifact_id}",
                 "/v1/runs/{run_id}/steering", "/v1/conversations/{conversation_id}/search",
                 "/v1/conversations/{conversation_id}/state", "/v1/health", "/v1/console/whoami"):
        assert path in paths, path
    assert not any(p.startswith("/ui") for p in paths)
    params = {p["name"] for p in paths["/v1/runs"]["get"]["parameters"]}
    assert {"agent_id", "since", "until"} <= params
