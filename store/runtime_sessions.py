"""Runtime sessions of external harnesses (``agent_runtime_session``, SPEC §7).

A session belongs to exactly one owner: a conversation
(:class:`ConversationOwner`) or a workflow node (:class:`WorkflowOwner`). The
owner types make mixed ownership unrepresentable in the store, the table's
CHECK constraint rejects it in the database, and a partial unique index per
owner type keeps at most one ``active`` session per owner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Union

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, and_, delete, func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from protocol.errors import invalid_argument

from ._common import check_optional_text, check_text, epoch, insert_rows, now, oldest_first
from .models import ACTIVE_CONVERSATION_SESSION, ACTIVE_WORKFLOW_SESSION, AgentRuntimeSession

_T = AgentRuntimeSession.__table__
OwnerType = Literal["conversation", "workflow_run"]


@dataclass(frozen=True, slots=True)
class ConversationOwner:
    """A conversation (and optional thread) served by one runner of one binding."""

    runner_id: str
    binding_id: str
    conversation_id: str
    thread_id: str | None = None

    owner_type: ClassVar[str] = "conversation"
    active_predicate: ClassVar[str] = ACTIVE_CONVERSATION_SESSION  # of the partial unique index

    def __post_init__(self) -> None:
        for name in ("runner_id", "binding_id", "conversation_id"):
            check_text(getattr(self, name), name)
        check_optional_text(self.thread_id, "thread_id")

    def columns(self) -> dict[str, str | None]:
        """Row values; no thread is stored as '' so the unique index covers it."""
        return {"runner_id": self.runner_id, "binding_id": self.binding_id,
                "conversation_id": self.conversation_id, "thread_id": self.thread_id or "",
                "workflow_run_id": None, "node_id": None}


@dataclass(frozen=True, slots=True)
class WorkflowOwner:
    """One node of one workflow run."""

    workflow_run_id: str
    node_id: str

    owner_type: ClassVar[str] = "workflow_run"
    active_predicate: ClassVar[str] = ACTIVE_WORKFLOW_SESSION

    def __post_init__(self) -> None:
        check_text(self.workflow_run_id, "workflow_run_id", max_len=128)
        check_text(self.node_id, "node_id", max_len=128)

    def columns(self) -> dict[str, str | None]:
        return {"runner_id": None, "binding_id": None, "conversation_id": None, "thread_id": None,
                "workflow_run_id": self.workflow_run_id, "node_id": self.node_id}


SessionOwner = Union[ConversationOwner, WorkflowOwner]
_OWNER_COLUMNS = {
    "conversation": ("runner_id", "binding_id", "conversation_id", "thread_id"),
    "workflow_run": ("workflow_run_id", "node_id"),
}


def owner_from_dict(data: Mapping[str, Any]) -> SessionOwner:
    """Parse ``{"owner_type", …owner columns}``; columns of the other owner type
    (or unknown keys) → ``invalid_argument``."""
    owner_type = data.get("owner_type")
    if owner_type not in _OWNER_COLUMNS:
        raise invalid_argument("owner_type must be 'conversation' or 'workflow_run'")
    allowed = set(_OWNER_COLUMNS[owner_type])
    stray = sorted(k for k, v in data.items() if k != "owner_type" and k not in allowed and v is not None)
    if stray:
        raise invalid_argument(f"{owner_type} owners cannot set {stray}", owner_type=owner_type)
    fields = {k: data.get(k) for k in _OWNER_COLUMNS[owner_type]}
    if owner_type == "conversation":
        return ConversationOwner(**fields)  # type: ignore[arg-type]
    return WorkflowOwner(**fields)  # type: ignore[arg-type]


class RuntimeSession(BaseModel):
    """One stored runtime session (timestamps in int epoch seconds)."""

    model_config = ConfigDict(frozen=True)

    id: int
    owner_type: OwnerType
    runner_id: str | None = None
    binding_id: str | None = None
    conversation_id: str | None = None
    thread_id: str | None = None
    workflow_run_id: str | None = None
    node_id: str | None = None
    status: Literal["active", "cleaned"]
    backend_run_id: str | None = None
    external_session_id: str | None = None
    snapshot: str | None = None
    created_at: int
    updated_at: int
    cleaned_at: int | None = None

    @property
    def owner(self) -> SessionOwner:
        return owner_from_dict(self.model_dump(include={"owner_type", *_OWNER_COLUMNS[self.owner_type]}))


class RuntimeSessionStore:
    """Repository over ``agent_runtime_session``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert_active(self, owner: SessionOwner, *, backend_run_id: str | None = None,
                            external_session_id: str | None = None,
                            snapshot: str | None = None) -> RuntimeSession:
        """Create the owner's active session or update it; ``None`` arguments keep
        the stored values (one ``INSERT … ON CONFLICT`` on the partial unique index)."""
        stamp = now()
        _, rows = await insert_rows(self._session, _T, [{
            "owner_type": owner.owner_type, **owner.columns(), "status": "active",
            "backend_run_id": backend_run_id, "external_session_id": external_session_id,
            "snapshot": snapshot, "created_at": stamp, "updated_at": stamp, "cleaned_at": None,
        }], conflict=_OWNER_COLUMNS[owner.owner_type],
            conflict_where=text(owner.active_predicate),
            update=lambda excluded: {
                "backend_run_id": func.coalesce(excluded.backend_run_id, _T.c.backend_run_id),
                "external_session_id": func.coalesce(excluded.external_session_id,
                                                     _T.c.external_session_id),
                "snapshot": func.coalesce(excluded.snapshot, _T.c.snapshot),
                "updated_at": excluded.updated_at},
            returning=list(_T.c))
        return _session(rows[0])

    async def get_active(self, owner: SessionOwner) -> RuntimeSession | None:
        row = (await self._session.execute(select(_T).where(_active(owner)))).one_or_none()
        return None if row is None else _session(row)

    async def mark_cleaned(self, owner: SessionOwner) -> RuntimeSession | None:
        """Retire the owner's active session; ``None`` when there was none."""
        stamp = now()
        row = (await self._session.execute(
            update(_T).where(_active(owner))
            .values(status="cleaned", cleaned_at=stamp, updated_at=stamp)
            .returning(*_T.c))).one_or_none()
        return None if row is None else _session(row)

    async def retire_idle(self, idle_before: float, *, limit: int | None = None) -> list[RuntimeSession]:
        """Mark ``cleaned`` the active sessions not updated since ``idle_before`` (at most
        ``limit``, oldest first); returns them (their owners' workspaces can go now)."""
        stamp = now()
        condition = oldest_first(_T, and_(_T.c.status == "active", _T.c.updated_at < idle_before), limit)
        rows = (await self._session.execute(
            update(_T).where(condition).values(status="cleaned", cleaned_at=stamp, updated_at=stamp)
            .returning(*_T.c))).all()
        return [_session(r) for r in rows]

    async def delete_cleaned(self, cleaned_before: float, *, limit: int | None = None) -> int:
        """Delete ``cleaned`` sessions retired before ``cleaned_before`` (at most ``limit``)."""
        condition = oldest_first(_T, and_(_T.c.status == "cleaned", _T.c.cleaned_at < cleaned_before), limit)
        return (await self._session.execute(delete(_T).where(condition))).rowcount or 0

    async def list_active(self, owner_type: OwnerType | None = None) -> list[RuntimeSession]:
        query = select(_T).where(_T.c.status == "active").order_by(_T.c.id)
        if owner_type is not None:
            if owner_type not in _OWNER_COLUMNS:
                raise invalid_argument("owner_type must be 'conversation' or 'workflow_run'")
            query = query.where(_T.c.owner_type == owner_type)
        return [_session(r) for r in await self._session.execute(query)]


def _active(owner: SessionOwner) -> ColumnElement[bool]:
    columns = owner.columns()
    return and_(_T.c.status == "active", _T.c.owner_type == owner.owner_type,
                *[_T.c[name] == columns[name] for name in _OWNER_COLUMNS[owner.owner_type]])


def _session(row: Row[Any]) -> RuntimeSession:
    data = dict(row._mapping)
    for name in ("created_at", "updated_at", "cleaned_at"):
        data[name] = epoch(data[name])
    if data["owner_type"] == "conversation" and data["thread_id"] == "":
        data["thread_id"] = None
    return RuntimeSession.model_validate(data)
