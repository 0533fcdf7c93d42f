"""A harness subprocess reaches host resources only through the MCP gateway, with its run's token."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "harness"


def fakelib():
    spec = importlib.util.spec_from_file_location("_fakelib", FIXTURES / "_fakelib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def send(client, agent: str, conv: str, text: str) -> list[dict]:
    body = {"agent_id": agent, "event": {"event_type": "message.received", "conversation_id": conv,
                                         "input": {"text": text}}}
    async with client.stream("POST", "/v1/events", json=body) as r:
        assert r.status_code == 200, await r.aread()
        return [json.loads(line) async for line in r.aiter_lines() if line.strip()]


async def test_harness_reads_history_through_the_gateway_and_its_token_dies_with_the_run(client, conv, tmp_path):
    r = await client.put("/v1/agents/coder", json={
        "runner_id": "plugin:builtin/harness/default",
        "runner_config": {"kind": "claude", "command": [sys.executable, str(FIXTURES / "fake_claude")],
                          "workspace_root": str(tmp_path / "ws")},
        "resource_policy": {"harness_gateway": True, "history": ["page", "search"]},
        "multitask_strategy": "enqueue", "timeout_s": 60})
    assert r.status_code == 200, r.text
    assert (await send(client, "echo", conv, "remember the blue door"))[-1]["type"] == "run.completed"

    token_file = tmp_path / "token.json"
    frames = await send(client, "coder", conv, f"look back [[call-gateway]] [[keep-token:{token_file}]]")
    assert frames[-1]["type"] == "run.completed", frames[-1]
    reply = [f for f in frames if f["type"] == "message.completed"][0]["data"]["message"]["content"]
    outcome = json.loads(reply.removeprefix("GATEWAY:"))
    assert outcome["is_error"] is False and "remember the blue door" in outcome["text"]
    # the token never reaches the stream or the transcript
    saved = json.loads(token_file.read_text())
    token = saved["authorization"].removeprefix("Bearer ")
    assert token and all(token not in json.dumps(f) for f in frames)
    page = (await client.get(f"/v1/conversations/{conv}/transcript")).json()
    assert all(token not in (i["content"] or "") for i in page["items"])

    # the same token after its run ended is refused
    replay = fakelib().mcp_call(saved["url"], saved["authorization"], "history_page", {"limit": 10})
    assert replay["is_error"] is True and "unauthorized" in replay["text"]
