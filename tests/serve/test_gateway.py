"""The MCP harness gateway at /mcp: a real MCP client session authorized by a live run's capability token."""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

GATEWAY_TOOLS = {"history_page", "history_search", "retrieve_knowledge", "call_tool", "state_get",
                 "state_set", "steering_pull"}


@asynccontextmanager
async def mcp_session(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0)) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            yield client


def text_of(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def start_probe_run(client: httpx.AsyncClient, conv: str) -> tuple[str, str, str, httpx.Response, object]:
    """Start a gateway-enabled run and read its first delta (token + gateway URL) off the NDJSON stream."""
    body = {"agent_id": "probe", "event": {"event_type": "message.received", "conversation_id": conv,
                                          "input": {"text": "probe the gateway"}}}
    cm = client.stream("POST", "/v1/events", json=body)
    response = await cm.__aenter__()
    assert response.status_code == 200
    lines = response.aiter_lines()
    run_id = None
    async for line in lines:
        frame = json.loads(line)
        run_id = frame["run_id"]
        if frame["type"] == "message.delta":
            info = json.loads(frame["data"]["chunk"]["content"])
            return run_id, info["capability_token"], info["gateway_url"], cm, lines
    raise AssertionError("the probe never published its token")


async def test_gateway_session_with_live_and_dead_tokens(client: httpx.AsyncClient, serve_app, conv: str):
    run_id, token, gateway_url, cm, lines = await start_probe_run(client, conv)
    assert token and gateway_url == f"{serve_app.url}/mcp"
    try:
        async with mcp_session(gateway_url, token) as mcp:
            tools = {t.name for t in (await mcp.list_tools()).tools}
            assert GATEWAY_TOOLS <= tools
            page = await mcp.call_tool("history_page", {"limit": 10})
            assert not page.is_error, text_of(page)
            items = page.structured_content["items"]
            assert [(i["role"], i["content"]) for i in items] == [("user", "probe the gateway")]
            # the scope is the run's own conversation only
            other = await mcp.call_tool("history_page", {"conversation_id": "someone-else"})
            assert other.is_error and "unauthorized" in text_of(other)
        for bad in ("not-a-token", "x" * 43):
            async with mcp_session(gateway_url, bad) as mcp:
                refused = await mcp.call_tool("history_page", {})
                assert refused.is_error and "unauthorized" in text_of(refused)
                assert token not in text_of(refused)
        async with mcp_session(gateway_url, None) as mcp:
            refused = await mcp.call_tool("history_page", {})
            assert refused.is_error and "unauthorized" in text_of(refused)
    finally:
        await client.post(f"/v1/runs/{run_id}/cancel", json={"reason": "gateway test done"})
        rest = [json.loads(line) async for line in lines]
        await cm.__aexit__(None, None, None)
    assert rest[-1]["type"] == "run.failed" and rest[-1]["data"]["code"] == "run.cancelled"

    # the token died with the run
    async with mcp_session(gateway_url, token) as mcp:
        dead = await mcp.call_tool("history_page", {"limit": 10})
        assert dead.is_error and "unauthorized" in text_of(dead)
        assert token not in text_of(dead)


async def test_other_runs_token_cannot_read_this_conversation(client: httpx.AsyncClient, conv: str):
    run_a, token_a, url, cm_a, lines_a = await start_probe_run(client, conv + "-a")
    run_b, token_b, _, cm_b, lines_b = await start_probe_run(client, conv + "-b")
    try:
        async with mcp_session(url, token_a) as mcp:
            mine = await mcp.call_tool("history_page", {})
            assert not mine.is_error
            assert {i["conversation_id"] for i in mine.structured_content["items"]} == {conv + "-a"}
            theirs = await mcp.call_tool("history_page", {"conversation_id": conv + "-b"})
            assert theirs.is_error and "unauthorized" in text_of(theirs)
    finally:
        for run_id, lines, cm in ((run_a, lines_a, cm_a), (run_b, lines_b, cm_b)):
            await client.post(f"/v1/runs/{run_id}/cancel")
            async for _ in lines:
                pass
            await cm.__aexit__(None, None, None)
    await asyncio.sleep(0)
