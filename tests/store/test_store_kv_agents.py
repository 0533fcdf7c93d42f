"""Plugin/workspace key-value storage and persisted agent configs."""
from __future__ import annotations

import pytest

from protocol.agents import AgentConfig
from protocol.errors import ErrorCode
from store.agents import AgentStore
from store.kv import KvStore


async def test_kv_roundtrip_and_prefix(db, uid):
    ns = uid("ns")
    async with db.transaction() as s:
        kv = KvStore(s)
        assert await kv.get("plugin", ns, "a") is None
        await kv.set("plugin", ns, "a", {"v": 1})
        await kv.set("plugin", ns, "a", {"v": 2})
        for key in ("p.1", "p.2", "P.3", "p%"):
            await kv.set("plugin", ns, key, key)
        await kv.set("workspace", ns, "p.9", 9)
        assert await kv.get("plugin", ns, "a") == {"v": 2}
        assert await kv.keys("plugin", ns, "p.") == ["p.1", "p.2"]
        assert await kv.keys("plugin", ns, "p%") == ["p%"]
        assert await kv.keys("workspace", ns) == ["p.9"]
        assert await kv.delete("plugin", ns, "a") and not await kv.delete("plugin", ns, "a")


@pytest.mark.parametrize("call, code", [
    (lambda kv: kv.set("global", "ns", "k", 1), ErrorCode.INVALID_ARGUMENT),
    (lambda kv: kv.set("plugin", "ns", "k", {1, 2}), ErrorCode.INVALID_ARGUMENT),
    (lambda kv: kv.set("plugin", "ns", "k", "x" * 300_000), ErrorCode.PAYLOAD_TOO_LARGE),
    (lambda kv: kv.get("plugin", "", "k"), ErrorCode.INVALID_ARGUMENT),
])
async def test_kv_bad_input(db, fails_with, call, code):
    async with db.transaction() as s:
        with fails_with(code):
            await call(KvStore(s))


async def test_agents_put_bumps_version(db, uid, fails_with):
    agent_id = uid("agent")
    config = AgentConfig(runner_id="plugin:builtin/echo/echo", runner_config={"prefix": ">"})
    async with db.transaction() as s:
        agents = AgentStore(s)
        assert await agents.put(agent_id, config) == 1
        assert await agents.put(agent_id, config.model_copy(update={"enabled": False})) == 2
        record = await agents.get(agent_id)
        assert record.version == 2 and record.config.enabled is False
        assert record.config.runner_config == {"prefix": ">"}
        assert agent_id in [a.agent_id for a in await agents.list()]
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await agents.put(agent_id, {"runner_id": "not-a-runner"})
        assert await agents.delete(agent_id)
        with fails_with(ErrorCode.NOT_FOUND):
            await agents.get(agent_id)
