"""State: scope keys, atomic upserts with previous values, limits, listing, snapshots."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from protocol.errors import ErrorCode
from store.models import AgentRunnerState
from protocol.scopes import ScopeKeyBuilder, scope_key
from store.state import StateStore

RUNNER = "plugin:builtin/echo/echo"


def _key(uid, scope="conversation") -> str:
    return ScopeKeyBuilder(RUNNER, uid("agent"), "bot", "ws", conversation_id=uid("conv"),
                           actor_type="user", actor_id="u1", subject_type="group",
                           subject_id="g1").key(scope)


# -- scope keys (pure) ---------------------------------------------------------
def test_scope_key_has_no_separator_ambiguity():
    def conv(a: str, b: str) -> str:
        return scope_key("conversation", RUNNER, "agent", "bot", "ws", conversation_id=a, thread_id=b)

    assert conv("a", "bc") != conv("ab", "c")
    assert scope_key("actor", RUNNER, "agent", "b", "ws", actor_type="x", actor_id="y:z") != \
        scope_key("actor", RUNNER, "agent", "b", "ws", actor_type="x:y", actor_id="z")
    assert scope_key("runner", RUNNER, "agent", None, None) != scope_key("runner", RUNNER, "agent", "", "")
    assert scope_key("runner", RUNNER, "ag", "ent", None) != scope_key("runner", RUNNER, "agent", None, None)


def test_scope_key_uses_only_its_scope_parts():
    base = dict(runner_id=RUNNER, binding_identity="agent", bot_id="bot", workspace_id="ws")
    keys = {scope: scope_key(scope, **base, conversation_id="c", thread_id="t", actor_type="user",
                             actor_id="u", subject_type="group", subject_id="g")
            for scope in ("conversation", "actor", "subject", "runner")}
    assert len(set(keys.values())) == 4
    assert keys["actor"] == scope_key("actor", **base, actor_type="user", actor_id="u",
                                      conversation_id="other")
    assert keys["runner"] == scope_key("runner", **base)
    assert keys["conversation"] != scope_key("conversation", **base, conversation_id="c")  # thread counts
    assert ScopeKeyBuilder(RUNNER, "agent", "bot", "ws", conversation_id="c", thread_id="t").keys(
        ["conversation", "runner"]) == {"conversation": keys["conversation"], "runner": keys["runner"]}


@pytest.mark.parametrize("scope, parts", [
    ("workspace", {}),
    ("conversation", {}),
    ("actor", {"actor_type": "user"}),
    ("subject", {"subject_id": "g"}),
])
def test_scope_key_rejects_unknown_scope_and_missing_parts(scope, parts, fails_with):
    with fails_with(ErrorCode.INVALID_ARGUMENT):
        scope_key(scope, RUNNER, "agent", "bot", "ws", **parts)


# -- store ------------------------------------------------------------------------
async def test_set_get_delete_return_previous(db, uid):
    key = _key(uid)
    async with db.transaction() as s:
        state = StateStore(s)
        assert await state.get(key, "k") is None
        first = await state.set(key, "k", {"n": 1}, scope="conversation", runner_id=RUNNER)
        assert first.previous is None and first.entry.value == {"n": 1}
        second = await state.set(key, "k", [1, (2, 3)], scope="conversation", runner_id=RUNNER)
        assert second.previous.value == {"n": 1}
        assert second.entry.value == [1, [2, 3]]  # stored as JSON reads back
        assert (await state.get(key, "k")).value == [1, [2, 3]]
        deleted = await state.delete(key, "k")
        assert deleted.value == [1, [2, 3]]
        assert await state.delete(key, "k") is None
        assert await state.get(key, "k") is None


async def test_fifty_concurrent_sets_on_one_key(db, uid):
    key = _key(uid)
    values = [{"writer": i} for i in range(50)]

    async def write(value):
        async with db.transaction() as s:
            return await StateStore(s).set(key, "hot", value, scope="conversation", runner_id=RUNNER)

    writes = await asyncio.gather(*(write(v) for v in values))
    async with db.transaction() as s:
        final = await StateStore(s).get(key, "hot")
        rows = (await s.execute(select(func.count()).select_from(AgentRunnerState).where(
            AgentRunnerState.scope_key == key))).scalar_one()
    assert rows == 1
    assert final.value in values
    # The writes were serialised: each saw a distinct predecessor, exactly one saw none,
    # and the value nobody replaced is the one that stayed.
    previous = [w.previous.value["writer"] if w.previous else None for w in writes]
    assert previous.count(None) == 1
    replaced = [p for p in previous if p is not None]
    assert len(set(replaced)) == 49
    assert set(range(50)) - set(replaced) == {final.value["writer"]}


async def test_oversized_value_is_payload_too_large(db, uid, fails_with):
    async with db.transaction() as s:
        with fails_with(ErrorCode.PAYLOAD_TOO_LARGE):
            await StateStore(s).set(_key(uid), "big", "x" * (256 * 1024), scope="runner",
                                    runner_id=RUNNER)


@pytest.mark.parametrize("value", [{1, 2}, object(), float("nan"), {"k": b"bytes"}])
async def test_non_json_value_is_invalid_argument(db, uid, fails_with, value):
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await StateStore(s).set(_key(uid), "k", value, scope="runner", runner_id=RUNNER)


@pytest.mark.parametrize("call", [
    lambda st, k: st.set(k, "k", 1, scope="workspace", runner_id=RUNNER),
    lambda st, k: st.get("not-a-scope-key", "k"),
    lambda st, k: st.get(k, ""),
    lambda st, k: st.list(k, limit=101),
])
async def test_bad_arguments_are_invalid_argument(db, uid, fails_with, call):
    async with db.transaction() as s:
        with fails_with(ErrorCode.INVALID_ARGUMENT):
            await call(StateStore(s), _key(uid))


async def test_list_prefix_limit_and_snapshot(db, uid):
    builder = ScopeKeyBuilder(RUNNER, uid("agent"), "bot", "ws", conversation_id=uid("conv"),
                              actor_type="user", actor_id=uid("user"))
    conv, actor = builder.key("conversation"), builder.key("actor")
    async with db.transaction() as s:
        state = StateStore(s)
        for name in ("a.1", "a.2", "a.3", "a_x", "A.4", "b.1"):
            await state.set(conv, name, name, scope="conversation", runner_id=RUNNER)
        await state.set(actor, "pref", {"lang": "en"}, scope="actor", runner_id=RUNNER)

        page = await state.list(conv, prefix="a.", limit=2)
        assert [e.key for e in page.items] == ["a.1", "a.2"] and page.has_more
        page = await state.list(conv, prefix="a.", limit=3)
        assert [e.key for e in page.items] == ["a.1", "a.2", "a.3"] and not page.has_more
        assert [e.key for e in (await state.list(conv, prefix="a_")).items] == ["a_x"]  # '_' is literal
        assert len((await state.list(conv)).items) == 6

        snap = await state.snapshot({"conversation": conv, "actor": actor,
                                     "runner": builder.key("runner")})
    assert snap["actor"] == {"pref": {"lang": "en"}}
    assert snap["runner"] == {}
    assert snap["conversation"]["b.1"] == "b.1" and len(snap["conversation"]) == 6
