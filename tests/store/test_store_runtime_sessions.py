"""Runtime sessions: owner exclusivity (types, store, CHECK), one active row per owner."""
from __future__ import annotations

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from protocol.errors import ErrorCode
from store.models import AgentRuntimeSession
from store.runtime_sessions import (
    ConversationOwner,
    RuntimeSessionStore,
    WorkflowOwner,
    owner_from_dict,
)


def _conversation(uid, thread=None) -> ConversationOwner:
    return ConversationOwner("plugin:builtin/harness/claude", "agent@1", uid("conv"), thread)


async def test_upsert_keeps_one_active_row_per_owner(db, uid):
    owner = _conversation(uid)
    async with db.transaction() as s:
        store = RuntimeSessionStore(s)
        first = await store.upsert_active(owner, external_session_id="ext-1", snapshot="s1")
        second = await store.upsert_active(owner, snapshot="s2")
        assert second.id == first.id
        assert (second.external_session_id, second.snapshot) == ("ext-1", "s2")  # None keeps
        assert second.owner == owner and second.thread_id is None
        cleaned = await store.mark_cleaned(owner)
        assert cleaned.status == "cleaned" and cleaned.cleaned_at is not None
        assert await store.get_active(owner) is None
        assert await store.mark_cleaned(owner) is None
        fresh = await store.upsert_active(owner, external_session_id="ext-2")
        assert fresh.id != first.id and fresh.external_session_id == "ext-2"
        assert (await store.get_active(owner)).id == fresh.id


async def test_owners_are_independent(db, uid):
    conv = _conversation(uid)
    threaded = ConversationOwner(conv.runner_id, conv.binding_id, conv.conversation_id, "t1")
    node = WorkflowOwner(uid("wf"), "node-1")
    async with db.transaction() as s:
        store = RuntimeSessionStore(s)
        ids = {(await store.upsert_active(o)).id for o in (conv, threaded, node)}
        assert len(ids) == 3
        workflow = await store.list_active("workflow_run")
        assert node in [w.owner for w in workflow]
        assert all(w.owner_type == "workflow_run" for w in workflow)


def test_owner_exclusivity_in_the_store(fails_with):
    with fails_with(ErrorCode.INVALID_ARGUMENT):
        owner_from_dict({"owner_type": "conversation", "runner_id": "r", "binding_id": "b",
                         "conversation_id": "c", "workflow_run_id": "w"})
    with fails_with(ErrorCode.INVALID_ARGUMENT):
        owner_from_dict({"owner_type": "workflow_run", "workflow_run_id": "w", "node_id": "n",
                         "conversation_id": "c"})
    with fails_with(ErrorCode.INVALID_ARGUMENT):
        owner_from_dict({"owner_type": "chat"})
    with fails_with(ErrorCode.INVALID_ARGUMENT):
        ConversationOwner("r", "b", "")
    assert owner_from_dict({"owner_type": "workflow_run", "workflow_run_id": "w",
                            "node_id": "n"}) == WorkflowOwner("w", "n")


@pytest.mark.parametrize("row", [
    {"owner_type": "conversation", "runner_id": "r", "binding_id": "b", "conversation_id": "c",
     "thread_id": "", "workflow_run_id": "w"},
    {"owner_type": "workflow_run", "workflow_run_id": "w", "node_id": "n", "conversation_id": "c"},
    {"owner_type": "conversation", "runner_id": "r", "binding_id": "b"},
])
async def test_owner_exclusivity_in_the_database(db, row):
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            await s.execute(insert(AgentRuntimeSession).values(
                status="active", created_at=0.0, updated_at=0.0, **row))
