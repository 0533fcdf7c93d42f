"""The durable facts of RunnerHost as SQLAlchemy 2 typed models (SPEC §7).

Conventions, shared by every table:

* timestamps are float epoch seconds (UTC); API models expose them as ints;
* ``*_json`` columns are JSONB on Postgres and JSON text on SQLite;
* every natural key (event_id, transcript_id, (conversation_id, seq),
  (scope_key, state_key), artifact_id, run_id, (run_id, sequence)) is unique,
  which is what makes every repository write idempotent;
* the schema is created by the Alembic migrations in ``store/migrations``, never
  by ``create_all``; the models are its typed description and the autogenerate
  reference (a test asserts they agree).

Postgres-only objects (the GIN full-text indexes) carry ``info={"dialects": …}``
and ``ddl_if``; the SQLite FTS5 table ``knowledge_fts`` exists only in the
migration because it is not a regular table.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ._common import now, ts_vector

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on Postgres; Python ``None`` is stored as SQL NULL.
JsonType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: 64-bit surrogate key; plain INTEGER on SQLite so it aliases the rowid (autoincrement).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

RUN_STATUSES = ("created", "running", "completed", "failed", "cancelled", "timeout")
STATE_SCOPE_NAMES = ("conversation", "actor", "subject", "runner")
KV_AREAS = ("plugin", "workspace")

#: Predicates of the partial unique indexes on active runtime sessions; literal
#: SQL so ``ON CONFLICT … WHERE`` can name the same predicate on both dialects.
ACTIVE_CONVERSATION_SESSION = "status = 'active' AND owner_type = 'conversation'"
ACTIVE_WORKFLOW_SESSION = "status = 'active' AND owner_type = 'workflow_run'"


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        str: String(256),
        float: Double(),
        int: Integer(),
        bool: Boolean(),
        bytes: LargeBinary(),
        dict[str, Any]: JsonType,
        list[dict[str, Any]]: JsonType,
        Any: JsonType,
    }


def _pg_only(index: Index) -> Index:
    """Mark an index Postgres-only for DDL and for the model/migration comparison."""
    index.info["dialects"] = ("postgresql",)
    return index.ddl_if(dialect="postgresql")


class EventLog(Base):
    """Append-only log of inbound, system and steering-audit events; ``id`` orders it."""

    __tablename__ = "event_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_type: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(32))
    source_event_type: Mapped[str | None] = mapped_column(String(128))
    bot_id: Mapped[str | None]
    workspace_id: Mapped[str | None]
    conversation_id: Mapped[str | None]
    thread_id: Mapped[str | None]
    actor_type: Mapped[str | None] = mapped_column(String(64))
    actor_id: Mapped[str | None]
    actor_name: Mapped[str | None]
    subject_type: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None]
    input_summary: Mapped[str | None] = mapped_column(Text)
    input_json: Mapped[dict[str, Any] | None]
    data_json: Mapped[dict[str, Any] | None]
    raw_ref: Mapped[str | None] = mapped_column(String(512))
    binding_id: Mapped[str | None]
    agent_id: Mapped[str | None] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(128))
    runner_id: Mapped[str | None]
    metadata_json: Mapped[dict[str, Any]] = mapped_column(default=dict)
    event_time: Mapped[float | None]
    created_at: Mapped[float] = mapped_column(default=now, index=True)
    #: SHA-256 of the request that submitted an inbound event (agent id + the fields the client
    #: set): a re-sent ``event_id`` with the same digest is a retry, with another one a conflict.
    body_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "conversation_id", "id"),
        Index(None, "event_type", "id"),
    )


class Transcript(Base):
    """Conversation view: gap-free per-conversation ``seq``; ``reverted`` rows are hidden."""

    __tablename__ = "transcript"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    transcript_id: Mapped[str] = mapped_column(String(128), unique=True)
    event_id: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str | None] = mapped_column(String(128), index=True)
    conversation_id: Mapped[str]
    thread_id: Mapped[str | None]
    bot_id: Mapped[str | None]
    workspace_id: Mapped[str | None]
    role: Mapped[str] = mapped_column(String(32))
    item_type: Mapped[str] = mapped_column(String(64))
    content: Mapped[str | None] = mapped_column(Text)
    content_json: Mapped[dict[str, Any] | None]
    attachment_refs: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    seq: Mapped[int] = mapped_column(BigInteger)
    reverted: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    created_at: Mapped[float] = mapped_column(default=now, index=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        _pg_only(Index("ix_transcript_content_fts", ts_vector(text("content")),
                       postgresql_using="gin")),
    )


class TranscriptCounter(Base):
    """Last issued ``seq`` per conversation; its row lock serialises appends."""

    __tablename__ = "transcript_counter"

    conversation_id: Mapped[str] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class AgentRunnerState(Base):
    """Small JSON values per (scope_key, state_key); see :mod:`store.state`."""

    __tablename__ = "agent_runner_state"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    scope_key: Mapped[str] = mapped_column(String(64))
    state_key: Mapped[str]
    scope: Mapped[str] = mapped_column(String(16))
    runner_id: Mapped[str]
    value_json: Mapped[Any | None]
    created_at: Mapped[float] = mapped_column(default=now)
    updated_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("scope_key", "state_key"),
        CheckConstraint(_in("scope", STATE_SCOPE_NAMES), name="scope"),
    )


class AgentArtifact(Base):
    """Artifact metadata plus bytes: inline ``content`` (storage 'db') or ``file_path``
    relative to the artifact root (storage 'file'), never both."""

    __tablename__ = "agent_artifact"

    artifact_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    artifact_type: Mapped[str] = mapped_column(String(64))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage: Mapped[str] = mapped_column(String(8))
    content: Mapped[bytes | None]
    file_path: Mapped[str | None] = mapped_column(String(1024))
    conversation_id: Mapped[str | None] = mapped_column(index=True)
    run_id: Mapped[str | None] = mapped_column(String(128))
    runner_id: Mapped[str | None]
    created_at: Mapped[float] = mapped_column(default=now)
    expires_at: Mapped[float | None] = mapped_column(index=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        CheckConstraint(
            "(storage = 'db' AND content IS NOT NULL AND file_path IS NULL)"
            " OR (storage = 'file' AND file_path IS NOT NULL AND content IS NULL)",
            name="storage"),
    )


class AgentRun(Base):
    """The run ledger: one row per run; status moves created → running → terminal."""

    __tablename__ = "agent_run"

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str | None] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    binding_id: Mapped[str | None]
    runner_id: Mapped[str | None]
    conversation_id: Mapped[str | None]
    thread_id: Mapped[str | None]
    bot_id: Mapped[str | None]
    workspace_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(default=now)
    started_at: Mapped[float | None]
    finished_at: Mapped[float | None]
    updated_at: Mapped[float] = mapped_column(default=now)
    deadline_at: Mapped[float | None]
    cancel_requested_at: Mapped[float | None]
    metadata_json: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: The host (``runnerhost_host.host_id``) that accepted the run and drives it.
    owner_host: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index(None, "conversation_id", "created_at"),
        Index(None, "owner_host", "status"),
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
    )


class AgentRunEvent(Base):
    """Every result of a run, unique per (run_id, sequence); replayable history."""

    __tablename__ = "agent_run_event"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128), ForeignKey("agent_run.run_id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    data_json: Mapped[dict[str, Any] | None]
    created_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (UniqueConstraint("run_id", "sequence"),)


class AgentRuntimeSession(Base):
    """An external harness's session, owned by a conversation XOR a workflow node.

    Conversation owners fill (runner_id, binding_id, conversation_id, thread_id —
    '' when there is no thread, so the unique index sees it); workflow owners fill
    (workflow_run_id, node_id). At most one ``active`` row per owner.
    """

    __tablename__ = "agent_runtime_session"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    owner_type: Mapped[str] = mapped_column(String(16))
    runner_id: Mapped[str | None]
    binding_id: Mapped[str | None]
    conversation_id: Mapped[str | None]
    thread_id: Mapped[str | None]
    workflow_run_id: Mapped[str | None] = mapped_column(String(128))
    node_id: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    backend_run_id: Mapped[str | None]
    external_session_id: Mapped[str | None]
    snapshot: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(default=now)
    updated_at: Mapped[float] = mapped_column(default=now)
    cleaned_at: Mapped[float | None]

    __table_args__ = (
        CheckConstraint(
            "(owner_type = 'conversation' AND runner_id IS NOT NULL AND binding_id IS NOT NULL"
            " AND conversation_id IS NOT NULL AND thread_id IS NOT NULL"
            " AND workflow_run_id IS NULL AND node_id IS NULL)"
            " OR (owner_type = 'workflow_run' AND workflow_run_id IS NOT NULL AND node_id IS NOT NULL"
            " AND runner_id IS NULL AND binding_id IS NULL AND conversation_id IS NULL"
            " AND thread_id IS NULL)",
            name="owner"),
        CheckConstraint("status IN ('active', 'cleaned')", name="status"),
        Index("uq_agent_runtime_session_conversation_active",
              "runner_id", "binding_id", "conversation_id", "thread_id", unique=True,
              postgresql_where=text(ACTIVE_CONVERSATION_SESSION),
              sqlite_where=text(ACTIVE_CONVERSATION_SESSION)),
        Index("uq_agent_runtime_session_workflow_active",
              "workflow_run_id", "node_id", unique=True,
              postgresql_where=text(ACTIVE_WORKFLOW_SESSION),
              sqlite_where=text(ACTIVE_WORKFLOW_SESSION)),
    )


class Agent(Base):
    """Persisted agent configuration (a dumped :class:`protocol.agents.AgentConfig`)."""

    __tablename__ = "agent"

    agent_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    config_json: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[float] = mapped_column(default=now)
    updated_at: Mapped[float] = mapped_column(default=now)


class KnowledgeDocument(Base):
    """One retrievable chunk of a knowledge-base document; long documents become
    rows ``<doc_id>#1``, ``<doc_id>#2``, …"""

    __tablename__ = "knowledge_document"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kb_id: Mapped[str] = mapped_column(String(128))
    doc_id: Mapped[str] = mapped_column(String(300))
    title: Mapped[str | None] = mapped_column(String(512))
    content: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("kb_id", "doc_id"),
        _pg_only(Index("ix_knowledge_document_fts", ts_vector(text("title"), text("content")),
                       postgresql_using="gin")),
    )


class AgentKv(Base):
    """Plugin / workspace key-value storage for runners."""

    __tablename__ = "agent_kv"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    area: Mapped[str] = mapped_column(String(16))
    namespace: Mapped[str]
    key: Mapped[str] = mapped_column(String(512))
    value_json: Mapped[Any | None]
    updated_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("area", "namespace", "key"),
        CheckConstraint(_in("area", KV_AREAS), name="area"),
    )


class RunnerHostInstance(Base):
    """A host (one per ingress replica) and its heartbeat: the owner of the runs it accepted.

    A host whose heartbeat is older than the dead-after bound, or that recorded its stop, is
    gone; any live host then finalizes its non-terminal runs (``host.lost``).
    """

    __tablename__ = "runnerhost_host"

    host_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The Ray GCS address and session the host lived in: a later host on the same GCS address
    #: but another session proves this one's session is over.
    ray_address: Mapped[str | None] = mapped_column(String(256))
    ray_session: Mapped[str | None] = mapped_column(String(256))
    started_at: Mapped[float] = mapped_column(default=now)
    heartbeat_at: Mapped[float] = mapped_column(default=now)
    stopped_at: Mapped[float | None]
    info_json: Mapped[dict[str, Any]] = mapped_column(default=dict)


class KnowledgeVector(Base):
    """The embedding of one knowledge chunk (a ``knowledge_document`` row) under one
    embedding model, for knowledge bases configured with an ``embedding_model_id``.

    Written lazily: the first search of such a base after an ingest embeds the chunks
    that have no vector for its model yet. Unique per (chunk, model); the store removes
    a chunk's vectors with the chunk (explicitly — no FK cascade, so SQLite without
    foreign-key enforcement behaves like Postgres). ``vector_json`` is a JSON list of
    floats of length ``dim``; search is a brute-force cosine over the base's vectors.
    """

    __tablename__ = "knowledge_vector"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(BigInteger)
    kb_id: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str]
    dim: Mapped[int]
    vector_json: Mapped[Any]
    created_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("document_id", "model_id"),
        Index(None, "kb_id", "model_id"),
    )


# -- platform delivery, interactions, schedules (SPEC §13) ---------------------------------
DELIVERY_STATUSES = ("pending", "sending", "streaming", "delivered", "failed", "unknown")
INTERACTION_STATUSES = ("pending", "answered", "expired")


class Delivery(Base):
    """One platform message (``part``) of one run's results at one target: a recorded fact.

    ``(run_id, target_key, part)`` is unique, so a delivery retried after a crash finds the
    message it already posted (``platform_message_id``) and edits it instead of posting again.
    ``content_sha256`` is what the platform shows now."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(128))
    target_key: Mapped[str] = mapped_column(String(160))
    part: Mapped[int]
    platform: Mapped[str] = mapped_column(String(32))
    connection: Mapped[str] = mapped_column(String(128))
    target_json: Mapped[dict[str, Any]]
    platform_message_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    content_length: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[float] = mapped_column(default=now)
    updated_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (
        UniqueConstraint("run_id", "target_key", "part"),
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
    )


class Interaction(Base):
    """A runner's ``interaction.requested`` and its answer. ``id`` is the host's public id;
    ``interaction_id`` is the runner's, unique within its run. ``origin_json`` keeps the
    routing of the asking event so the answer starts a run on the same conversation."""

    __tablename__ = "interaction"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    interaction_id: Mapped[str] = mapped_column(String(255))
    run_id: Mapped[str] = mapped_column(String(128))
    agent_id: Mapped[str | None] = mapped_column(String(128))
    conversation_id: Mapped[str | None]
    thread_id: Mapped[str | None]
    actor_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(16))
    request_json: Mapped[dict[str, Any]]
    origin_json: Mapped[dict[str, Any]]
    answer_json: Mapped[dict[str, Any] | None]
    answer_event_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(default=now)
    expires_at: Mapped[float]
    answered_at: Mapped[float | None]

    __table_args__ = (
        UniqueConstraint("run_id", "interaction_id"),
        Index(None, "status", "expires_at"),
        CheckConstraint(_in("status", INTERACTION_STATUSES), name="status"),
    )


class Schedule(Base):
    """A cron schedule of an agent; ``next_fire_at`` is the next tick not yet due."""

    __tablename__ = "schedule"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(128))
    schedule_id: Mapped[str] = mapped_column(String(64))
    cron: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(default=True)
    text: Mapped[str | None] = mapped_column(Text)
    data_json: Mapped[dict[str, Any]] = mapped_column(default=dict)
    next_fire_at: Mapped[float | None] = mapped_column(index=True)
    last_fired_at: Mapped[float | None]
    created_at: Mapped[float] = mapped_column(default=now)
    updated_at: Mapped[float] = mapped_column(default=now)

    __table_args__ = (UniqueConstraint("agent_id", "schedule_id"),)


class IntakeClaim(Base):
    """"Done once" claims: one row per (scope, claim_key), e.g. a schedule tick or a platform's
    event id. The insert that creates the row wins; ``done_at`` marks the work finished, and an
    unfinished claim older than its lease may be taken over (its owner died)."""

    __tablename__ = "intake_claim"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(192))
    claim_key: Mapped[str] = mapped_column(String(192))
    owner: Mapped[str] = mapped_column(String(128))
    claimed_at: Mapped[float] = mapped_column(default=now)
    done_at: Mapped[float | None]
    result_json: Mapped[dict[str, Any] | None]

    __table_args__ = (UniqueConstraint("scope", "claim_key"),)
