"""RunnerHost's durable fact store (SPEC §7): typed SQLAlchemy models, Alembic
migrations and async repositories for Postgres (asyncpg) and SQLite (aiosqlite).

Repositories wrap one session, so several act in one unit of work::

    async with db.transaction() as session:
        await EventLogStore(session).append_many(entries)
        await TranscriptStore(session).append_many(items)
        await RunLedgerStore(session).append_events(results)

Every write is idempotent on its natural key; bad input raises
:class:`protocol.errors.RunnerHostError`; reads return :mod:`protocol.pages` models.
"""
from .agents import AgentRecord, AgentStore
from .artifacts import ArtifactStore
from .engine import Database, create_engine, default_sqlite_url, normalize_url
from .event_log import EventLogEntry, EventLogStore
from .knowledge import KnowledgeStore, chunk_text
from .kv import KvStore
from .ledger import TERMINAL_STATUSES, TRANSITIONS, RunLedgerStore
from .migrate import downgrade, downgrade_async, schema_diff, upgrade, upgrade_async
from .runtime_sessions import (
    ConversationOwner,
    RuntimeSession,
    RuntimeSessionStore,
    SessionOwner,
    WorkflowOwner,
    owner_from_dict,
)
from protocol.scopes import ScopeKeyBuilder, scope_key

from .state import StateStore, StateWrite
from .transcript import TranscriptEntry, TranscriptStore

__all__ = [
    "AgentRecord", "AgentStore", "ArtifactStore", "ConversationOwner", "Database",
    "EventLogEntry", "EventLogStore", "KnowledgeStore", "KvStore", "RunLedgerStore",
    "RuntimeSession", "RuntimeSessionStore", "ScopeKeyBuilder", "SessionOwner", "StateStore",
    "StateWrite", "TERMINAL_STATUSES", "TRANSITIONS", "TranscriptEntry", "TranscriptStore",
    "WorkflowOwner", "chunk_text", "create_engine", "default_sqlite_url", "downgrade",
    "downgrade_async", "normalize_url", "owner_from_dict", "schema_diff", "scope_key",
    "upgrade", "upgrade_async",
]
