"""BuiltinTools and ToolRegistry (no network)."""
from __future__ import annotations

from datetime import datetime

import pytest

from actors.providers.tools import BuiltinTools, ToolProvider, ToolRegistry, build_tool_registry, safe_calculate
from protocol.errors import ErrorCode, RunnerHostError


@pytest.mark.parametrize("expr,expected", [
    ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 / 2", 3.5), ("7 // 2", 3), ("-2 ** 2", -4),
    ("2 ** 10", 1024), ("10 % 3", 1), ("sqrt(16) + abs(-2)", 6.0), ("round(pi, 2)", 3.14),
    ("max(1, 5, 3)", 5), ("1.5e3", 1500.0),
])
def test_calculator_arithmetic(expr, expected):
    assert safe_calculate(expr) == expected


@pytest.mark.parametrize("expr", [
    "__import__('os').system('echo hi')", "().__class__", "open('/etc/passwd')", "x", "a.b",
    "[1, 2]", "'a' * 3", "lambda: 1", "2 ** 100000", "9 ** 9 ** 9", "True + 1", "(1).real",
    "sqrt(x=4)", "1 if 1 else 2", "",
])
def test_calculator_rejects_unsafe_or_huge(expr):
    with pytest.raises((ValueError, ZeroDivisionError, OverflowError)):
        safe_calculate(expr)


async def test_builtin_tools_list_and_call():
    tools = BuiltinTools()
    names = [t["tool_name"] for t in await tools.list_tools()]
    assert names == ["current_time", "calculator", "echo_json"]
    now = await tools.call("current_time", {})
    assert now["utc"].endswith("Z") and datetime.fromisoformat(now["utc"].replace("Z", "+00:00"))
    assert (await tools.call("calculator", {"expression": "6*7"})) == {"expression": "6*7", "result": 42}
    assert (await tools.call("echo_json", {"a": [1, {"b": None}]})) == {"echo": {"a": [1, {"b": None}]}}
    only = BuiltinTools(["calculator"])
    assert [t["tool_name"] for t in await only.list_tools()] == ["calculator"]
    with pytest.raises(ValueError):
        BuiltinTools(["rm_rf"])


async def test_registry_list_detail_call_and_errors():
    reg = ToolRegistry([BuiltinTools()])
    listed = await reg.list_tools()
    assert {t["tool_name"] for t in listed} == {"current_time", "calculator", "echo_json"}
    assert all(set(t) == {"tool_name", "description", "parameters", "provider"} for t in listed)
    detail = await reg.detail("calculator")
    assert detail["provider"] == "builtin" and detail["parameters"]["required"] == ["expression"]
    assert (await reg.call("calculator", {"expression": "1+1"}))["result"] == 2

    async def code_of(coro):
        with pytest.raises(RunnerHostError) as info:
            await coro
        return info.value.code

    assert await code_of(reg.detail("nope")) is ErrorCode.NOT_FOUND
    assert await code_of(reg.call("nope", {})) is ErrorCode.NOT_FOUND
    assert await code_of(reg.call("calculator", {})) is ErrorCode.INVALID_ARGUMENT  # schema: required
    assert await code_of(reg.call("calculator", {"expression": 5})) is ErrorCode.INVALID_ARGUMENT
    assert await code_of(reg.call("calculator", {"expression": "1/0"})) is ErrorCode.INVALID_ARGUMENT
    assert await code_of(reg.call("calculator", {"expression": "import os"})) is ErrorCode.INVALID_ARGUMENT
    assert await code_of(reg.call("current_time", {"tz": "x"})) is ErrorCode.INVALID_ARGUMENT
    assert await code_of(reg.call("calculator", ["1+1"])) is ErrorCode.INVALID_ARGUMENT


class _Broken(ToolProvider):
    name = "broken"

    def __init__(self, fail_listing: bool = False) -> None:
        self.fail_listing = fail_listing

    async def list_tools(self):
        if self.fail_listing:
            raise ConnectionError("down")
        return [{"tool_name": "calculator", "description": "shadowed", "parameters": {}},
                {"tool_name": "kaboom", "description": "raises", "parameters": {"type": "object"}},
                {"tool_name": "scalar", "description": "returns a scalar", "parameters": {"type": "object"}}]

    async def call(self, tool_name, parameters):
        if tool_name == "kaboom":
            raise KeyError("internal detail")
        return 7


async def test_registry_shadowing_provider_bugs_and_dead_providers():
    reg = ToolRegistry([BuiltinTools(), _Broken(), _Broken(fail_listing=True)])
    assert (await reg.detail("calculator"))["provider"] == "builtin"  # first provider wins
    with pytest.raises(RunnerHostError) as info:
        await reg.call("kaboom", {})
    assert info.value.code is ErrorCode.RUNTIME_ERROR and "internal detail" not in info.value.message
    assert await reg.call("scalar", {}) == {"result": 7}
    assert len(await reg.list_tools()) == 5


async def test_build_tool_registry_from_host_config():
    reg = build_tool_registry({})
    assert {t["tool_name"] for t in await reg.list_tools()} == {"current_time", "calculator", "echo_json"}
    reg = build_tool_registry({"builtin": ["calculator"], "mcp_servers": [
        {"name": "lazy", "command": "/nonexistent/never-started"}]})
    assert [p.name for p in reg.providers] == ["builtin", "mcp:lazy"]  # MCP connects on first use only
    assert build_tool_registry({"builtin": False}).providers == []
    with pytest.raises(ValueError):
        build_tool_registry({"builtins": True})
    with pytest.raises(ValueError):
        build_tool_registry({"mcp_servers": [{"name": "a", "command": "x"}, {"name": "a", "command": "y"}]})
    with pytest.raises(ValueError):
        build_tool_registry({"mcp_servers": [{"name": "h", "transport": "streamable_http"}]})  # no url
