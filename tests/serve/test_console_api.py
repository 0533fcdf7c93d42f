"""The console's HTTP surface on the real Serve app: the UI bundle and the new read endpoints."""
from __future__ import annotations

import json
import time
import uuid

import httpx

from tests.serve.console_runner import REPORT
from tests.serve.test_http_runs import event, ndjson_frames, wait_status
from tests.waiting import wait_until


async def test_ui_bundle_is_served_with_a_strict_policy(serve_app):
    async with httpx.AsyncClient(base_url=serve_app.url, timeout=30) as c:
        root = await c.get("/ui")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        page = await c.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<main id="main"' in page.text and 'src="/ui/console.js"' in page.text
        js = await c.get("/ui/console.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        for bad in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/console.py"):
            r = await c.get(bad)
            assert r.status_code == 404 and r.json()["code"] == "not_found", bad


async def test_whoami_and_read_scope(serve_app):
    async with httpx.AsyncClient(base_url=serve_app.url, timeout=30) as c:
        assert (await c.get("/v1/console/whoami")).status_code == 401
        assert (await c.get("/v1/console/whoami", headers=serve_app.ingest)).json()["code"] == "unauthorized"
        me = (await c.get("/v1/console/whoami", headers=serve_app.read)).json()
        assert me == {"name": "read", "scopes": ["read"], "auth": "api_keys"}
        for path in ("/v1/stats/runs", "/v1/health", "/v1/conversations/x/state", "/v1/runs/run_x/artifacts"):
            assert (await c.get(path)).status_code == 401, path


async def test_counts_and_filters_by_agent_and_time(client, serve_app, conv):
    agent = f"count-{uuid.uuid4().hex[:6]}"
    put = await client.put(f"/v1/agents/{agent}", json={"runner_id": "plugin:builtin/echo/default"})
    assert put.status_code == 200, put.text
    before = time.time() - 1
    run_ids = []
    for i in range(3):
        async with client.stream("POST", "/v1/events", json={"agent_id": agent, "event": event(conv, f"m{i}")}) as r:
            run_ids.append((await ndjson_frames(r))[0]["run_id"])
    for run_id in run_ids:
        assert (await wait_status(client, run_id, "completed"))["status"] == "completed"
    stats = (await client.get("/v1/stats/runs", params={"agent_id": agent}, headers=serve_app.read)).json()
    assert stats["total"] == 3 and stats["counts"]["completed"] == 3 and set(stats["counts"]) == {
        "created", "running", "completed", "failed", "cancelled", "timeout"}
    listed = (await client.get("/v1/runs", params={"agent_id": agent, "since": before})).json()
    assert {r["run_id"] for r in listed["items"]} == set(run_ids) and listed["total_count"] == 3
    assert (await client.get("/v1/runs", params={"agent_id": agent, "until": before})).json()["items"] == []
    assert (await client.get("/v1/stats/runs", params={"agent_id": agent, "since": time.time() + 60})).json()["total"] == 0
    bad = await client.get("/v1/stats/runs", params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"
    assert (await client.get("/v1/runs", params={"until": -5})).status_code == 400


async def test_a_runs_facts_artifacts_download_state_and_search(client, serve_app, conv):
    async with client.stream("POST", "/v1/events", json={"agent_id": "showcase",
                                                         "event": event(conv, "find the weather in Oslo")}) as r:
        frames = await ndjson_frames(r)
    run_id = frames[0]["run_id"]
    assert frames[-1]["type"] == "run.completed", frames
    await wait_status(client, run_id, "completed")
    read = serve_app.read
    artifacts = (await client.get(f"/v1/runs/{run_id}/artifacts", headers=read)).json()
    assert [(a["name"], a["size_bytes"], a["run_id"]) for a in artifacts] == [("report.txt", len(REPORT), run_id)]
    download = await client.get(f"/v1/runs/{run_id}/artifacts/{artifacts[0]['artifact_id']}", headers=read)
    assert download.status_code == 200 and download.content == REPORT
    assert download.headers["content-disposition"] == 'attachment; filename="report.txt"'
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["x-content-type-options"] == "nosniff"
    missing = await client.get(f"/v1/runs/{run_id}/artifacts/art_nope", headers=read)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    unknown = await client.get("/v1/runs/run_nope/artifacts", headers=read)
    assert unknown.status_code == 404

    state = (await client.get(f"/v1/conversations/{conv}/state", headers=read)).json()
    assert [(s["scope"], s["agent_id"], [(i["key"], i["value"]) for i in s["items"]]) for s in state["scopes"]] == [
        ("conversation", "showcase", [("showcase", "seen")])]
    found = (await client.get(f"/v1/conversations/{conv}/search", params={"q": "weather"}, headers=read)).json()
    assert [i["content"] for i in found["items"]] == ["find the weather in Oslo"] and found["total_count"] == 1
    assert (await client.get(f"/v1/conversations/{conv}/search", headers=read)).status_code == 400
    steering = (await client.get(f"/v1/runs/{run_id}/steering", headers=read)).json()
    assert steering == {"items": []}


async def test_health_reports_pools_storage_and_nodes(client, serve_app):
    health = (await client.get("/v1/health", headers=serve_app.read)).json()
    run_pool = health["pools"][0]  # the RunActor pool comes first, then one per runner's workers
    assert run_pool["max"] == 16 and run_pool["size"] >= 1 and 0 <= run_pool["leased"] <= run_pool["size"]
    assert set(run_pool) >= {"name", "size", "leased", "creating", "max", "queue_length"}
    assert health["storage"]["batches"] >= 1 and health["storage"]["ops"] >= health["storage"]["batches"]
    assert health["nodes"] and all(n["alive"] for n in health["nodes"])
    assert any("runnerhost_run_slot" in n["resources"] or "CPU" in n["resources"] for n in health["nodes"])
    assert isinstance(health["workers"], list)


async def test_steering_audit_over_http_queued_then_injected(client, serve_app, conv):
    agent = f"steer-{uuid.uuid4().hex[:6]}"
    put = await client.put(f"/v1/agents/{agent}", json={
        "runner_id": "plugin:builtin/echo/default", "multitask_strategy": "steer",
        "runner_config": {"delay_s": 0.4, "chunks": 6, "steering": True}})
    assert put.status_code == 200, put.text
    async with client.stream("POST", "/v1/events", json={"agent_id": agent,
                                                         "event": event(conv, "one two three four five six")}) as r:
        lines = r.aiter_lines()
        first = None
        async for line in lines:
            if line.strip():
                frame = json.loads(line)
                first = first or frame
                if frame["type"] == "message.delta":
                    break
        steered = await client.post("/v1/events", json={"agent_id": agent, "event": event(conv, "also this")})
        assert steered.status_code == 200
        assert '"event.steered"' in steered.text
        async for _ in lines:
            pass
    run_id = first["run_id"]
    await wait_status(client, run_id, "completed")
    async def resolved() -> list | None:
        items = (await client.get(f"/v1/runs/{run_id}/steering", headers=serve_app.read)).json()["items"]
        return items if items and items[0]["status"] != "queued" else None
    audit = await wait_until(resolved, timeout=10, interval=0.1, what="the steering audit row to be resolved")
    assert [(a["text"], a["status"]) for a in audit] == [("also this", "injected")]
    assert audit[0]["claimed_at"] and audit[0]["resolved_at"] >= audit[0]["claimed_at"]
