"""McpToolProvider against a tiny real MCP server (MCPServer of the mcp SDK) run as a subprocess."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from actors.providers.tools import BuiltinTools, McpServerConfig, McpToolProvider, ToolRegistry, _session_closed
from protocol.errors import ErrorCode, RunnerHostError
from tests.waiting import wait_until

SERVER = str(Path(__file__).with_name("mcp_tiny_server.py"))
TOKEN_ENV = "RUNNERHOST_TEST_MCP_TOKEN"
TOKEN = "mcp-secret-token-42"


@pytest.fixture(scope="module")
async def stdio_provider():
    os.environ[TOKEN_ENV] = TOKEN
    provider = McpToolProvider(McpServerConfig(
        name="tiny", transport="stdio", command=sys.executable, args=[SERVER],
        env_from={"TINY_TOKEN": TOKEN_ENV}, timeout_s=20, tool_prefix="tiny_"))
    yield provider
    await provider.aclose()
    os.environ.pop(TOKEN_ENV, None)


async def test_stdio_list_and_call(stdio_provider):
    tools = {t["tool_name"]: t for t in await stdio_provider.list_tools()}
    assert {"tiny_add", "tiny_shout", "tiny_explode", "tiny_token_length"} <= set(tools)
    assert tools["tiny_add"]["parameters"]["required"] == ["a", "b"]
    assert tools["tiny_add"]["description"] == "Add two integers."
    out = await stdio_provider.call("tiny_add", {"a": 2, "b": 40})
    assert out["text"] == "42" and out["structured"] == {"result": 42}
    assert (await stdio_provider.call("tiny_token_length", {}))["text"] == str(len(TOKEN))


async def test_stdio_errors_map_to_error_model(stdio_provider, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RunnerHostError) as info:
        await stdio_provider.call("tiny_explode", {"reason": "kaput"})
    assert info.value.code is ErrorCode.RUNTIME_ERROR and "kaput" in info.value.message
    with pytest.raises(RunnerHostError) as info:
        await stdio_provider.call("tiny_nope", {})
    assert info.value.code is ErrorCode.NOT_FOUND
    assert TOKEN not in caplog.text and TOKEN not in repr(stdio_provider.config)


async def test_registry_over_builtin_and_mcp(stdio_provider):
    reg = ToolRegistry([BuiltinTools(), stdio_provider])
    names = {t["tool_name"]: t["provider"] for t in await reg.list_tools()}
    assert names["calculator"] == "builtin" and names["tiny_shout"] == "mcp:tiny"
    assert (await reg.call("tiny_shout", {"text": "hey"}))["text"] == "HEY"
    with pytest.raises(RunnerHostError) as info:
        await reg.call("tiny_add", {"a": "x"})  # validated against the MCP input schema first
    assert info.value.code is ErrorCode.INVALID_ARGUMENT


async def test_stdio_reconnects_after_server_crash():
    provider = McpToolProvider(McpServerConfig(name="crashy", command=sys.executable, args=[SERVER], timeout_s=10))
    try:
        assert (await provider.call("add", {"a": 1, "b": 1}))["text"] == "2"
        with pytest.raises(RunnerHostError) as info:
            await provider.call("crash", {})
        assert info.value.code is ErrorCode.RUNTIME_ERROR
        await wait_until(lambda: provider._task is None or provider._task.done(), timeout=10,
                         what="the session's owner task to notice its server crashed")
        assert (await provider.call("add", {"a": 2, "b": 2}))["text"] == "4"
    finally:
        await provider.aclose()


async def test_stdio_server_killed_while_idle_is_reconnected_transparently():
    provider = McpToolProvider(McpServerConfig(name="idle", command=sys.executable, args=[SERVER], timeout_s=10))
    try:
        pid = (await provider.call("pid", {}))["structured"]["result"]
        os.kill(pid, signal.SIGKILL)

        def noticed() -> bool:  # EOF on the server's stdout closed the session (or ended its owner task)
            client, task = provider._client, provider._task
            return client is None or task is None or task.done() or _session_closed(client)
        await wait_until(noticed, timeout=10, what="the MCP session to notice its server was killed")
        assert (await provider.call("add", {"a": 3, "b": 3}))["text"] == "6"
        assert (await provider.call("pid", {}))["structured"]["result"] != pid
    finally:
        await provider.aclose()


async def test_unstartable_server_is_runtime_error():
    provider = McpToolProvider(McpServerConfig(name="ghost", command="/nonexistent/mcp-server"))
    reg = ToolRegistry([BuiltinTools(), provider])
    assert {t["tool_name"] for t in await reg.list_tools()} == {"current_time", "calculator", "echo_json"}
    with pytest.raises(RunnerHostError) as info:
        await provider.list_tools()
    assert info.value.code is ErrorCode.RUNTIME_ERROR and info.value.retryable
    await provider.aclose()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def test_streamable_http_transport():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"the MCP HTTP server exited with {proc.returncode}"
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        await wait_until(listening, timeout=20, interval=0.1, retry_on=(OSError,),
                         what=f"the MCP HTTP server to listen on port {port}")
        os.environ[TOKEN_ENV] = TOKEN
        provider = McpToolProvider(McpServerConfig(
            name="tiny-http", transport="streamable_http", url=f"http://127.0.0.1:{port}/mcp",
            headers_from_env={"X-Api-Token": TOKEN_ENV}, include_tools=["add", "shout"]))
        try:
            assert {t["tool_name"] for t in await provider.list_tools()} == {"add", "shout"}
            assert (await provider.call("add", {"a": 20, "b": 22}))["structured"] == {"result": 42}
        finally:
            await provider.aclose()
            os.environ.pop(TOKEN_ENV, None)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
