"""Initial schema: event log, transcript, state, artifacts, run ledger, runtime
sessions, agents, knowledge base, key-value storage.

Self-contained on purpose (no imports from ``store.models``): a migration is
history and must not change when the models do. Postgres gets GIN full-text
expression indexes; SQLite gets the FTS5 table ``knowledge_fts`` instead.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EPOCH = sa.Double()

TRANSCRIPT_FTS = "to_tsvector('simple'::regconfig, coalesce(content, ''))"
KNOWLEDGE_FTS = ("to_tsvector('simple'::regconfig, "
                 "(coalesce(title, '') || ' ') || coalesce(content, ''))")
ACTIVE_CONVERSATION = "status = 'active' AND owner_type = 'conversation'"
ACTIVE_WORKFLOW = "status = 'active' AND owner_type = 'workflow_run'"


def _id() -> sa.Column:
    return sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True)


def _str(name: str, length: int = 256, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _epoch(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, EPOCH, nullable=nullable)


def _json(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, JSON, nullable=nullable)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    op.create_table(
        "event_log",
        _id(),
        _str("event_id", 128, nullable=False),
        _str("event_type", 128, nullable=False),
        _str("source", 32, nullable=False),
        _str("source_event_type", 128),
        _str("bot_id"), _str("workspace_id"), _str("conversation_id"), _str("thread_id"),
        _str("actor_type", 64), _str("actor_id"), _str("actor_name"),
        _str("subject_type", 64), _str("subject_id"),
        sa.Column("input_summary", sa.Text(), nullable=True),
        _json("input_json", nullable=True),
        _json("data_json", nullable=True),
        _str("raw_ref", 512),
        _str("binding_id"), _str("agent_id", 128), _str("run_id", 128), _str("runner_id"),
        _json("metadata_json"),
        _epoch("event_time", nullable=True),
        _epoch("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_event_log"),
        sa.UniqueConstraint("event_id", name="uq_event_log_event_id"),
    )
    op.create_index("ix_event_log_conversation_id_id", "event_log", ["conversation_id", "id"])
    op.create_index("ix_event_log_event_type_id", "event_log", ["event_type", "id"])
    op.create_index("ix_event_log_created_at", "event_log", ["created_at"])

    op.create_table(
        "transcript",
        _id(),
        _str("transcript_id", 128, nullable=False),
        _str("event_id", 128, nullable=False),
        _str("run_id", 128),
        _str("conversation_id", nullable=False),
        _str("thread_id"), _str("bot_id"), _str("workspace_id"),
        _str("role", 32, nullable=False),
        _str("item_type", 64, nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        _json("content_json", nullable=True),
        _json("attachment_refs"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("reverted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _epoch("created_at"),
        _json("metadata_json"),
        sa.PrimaryKeyConstraint("id", name="pk_transcript"),
        sa.UniqueConstraint("transcript_id", name="uq_transcript_transcript_id"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_transcript_conversation_id_seq"),
    )
    op.create_index("ix_transcript_run_id", "transcript", ["run_id"])
    op.create_index("ix_transcript_created_at", "transcript", ["created_at"])
    if _is_postgres():
        op.create_index("ix_transcript_content_fts", "transcript", [sa.text(TRANSCRIPT_FTS)],
                        postgresql_using="gin")

    op.create_table(
        "transcript_counter",
        _str("conversation_id", nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_transcript_counter"),
    )

    op.create_table(
        "agent_runner_state",
        _id(),
        _str("scope_key", 64, nullable=False),
        _str("state_key", nullable=False),
        _str("scope", 16, nullable=False),
        _str("runner_id", nullable=False),
        _json("value_json", nullable=True),
        _epoch("created_at"),
        _epoch("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_agent_runner_state"),
        sa.UniqueConstraint("scope_key", "state_key", name="uq_agent_runner_state_scope_key_state_key"),
        sa.CheckConstraint("scope IN ('conversation', 'actor', 'subject', 'runner')",
                           name="ck_agent_runner_state_scope"),
    )

    op.create_table(
        "agent_artifact",
        _str("artifact_id", 128, nullable=False),
        _str("artifact_type", 64, nullable=False),
        _str("mime_type", 128),
        _str("name", 512),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _str("sha256", 64, nullable=False),
        _str("storage", 8, nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        _str("file_path", 1024),
        _str("conversation_id"), _str("run_id", 128), _str("runner_id"),
        _epoch("created_at"),
        _epoch("expires_at", nullable=True),
        _json("metadata_json"),
        sa.PrimaryKeyConstraint("artifact_id", name="pk_agent_artifact"),
        sa.CheckConstraint(
            "(storage = 'db' AND content IS NOT NULL AND file_path IS NULL)"
            " OR (storage = 'file' AND file_path IS NOT NULL AND content IS NULL)",
            name="ck_agent_artifact_storage"),
    )
    op.create_index("ix_agent_artifact_conversation_id", "agent_artifact", ["conversation_id"])
    op.create_index("ix_agent_artifact_expires_at", "agent_artifact", ["expires_at"])

    op.create_table(
        "agent_run",
        _str("run_id", 128, nullable=False),
        _str("event_id", 128), _str("agent_id", 128), _str("binding_id"), _str("runner_id"),
        _str("conversation_id"), _str("thread_id"), _str("bot_id"), _str("workspace_id"),
        _str("status", 16, nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        _epoch("created_at"),
        _epoch("started_at", nullable=True),
        _epoch("finished_at", nullable=True),
        _epoch("updated_at"),
        _epoch("deadline_at", nullable=True),
        _epoch("cancel_requested_at", nullable=True),
        _json("metadata_json"),
        sa.PrimaryKeyConstraint("run_id", name="pk_agent_run"),
        sa.CheckConstraint(
            "status IN ('created', 'running', 'completed', 'failed', 'cancelled', 'timeout')",
            name="ck_agent_run_status"),
    )
    op.create_index("ix_agent_run_conversation_id_created_at", "agent_run",
                    ["conversation_id", "created_at"])
    op.create_index("ix_agent_run_status", "agent_run", ["status"])

    op.create_table(
        "agent_run_event",
        _id(),
        _str("run_id", 128, nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        _str("type", 64, nullable=False),
        _json("data_json", nullable=True),
        _epoch("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_agent_run_event"),
        sa.UniqueConstraint("run_id", "sequence", name="uq_agent_run_event_run_id_sequence"),
        sa.ForeignKeyConstraint(["run_id"], ["agent_run.run_id"], ondelete="CASCADE",
                                name="fk_agent_run_event_run_id_agent_run"),
    )

    op.create_table(
        "agent_runtime_session",
        _id(),
        _str("owner_type", 16, nullable=False),
        _str("runner_id"), _str("binding_id"), _str("conversation_id"), _str("thread_id"),
        _str("workflow_run_id", 128), _str("node_id", 128),
        _str("status", 16, nullable=False),
        _str("backend_run_id"), _str("external_session_id"),
        sa.Column("snapshot", sa.Text(), nullable=True),
        _epoch("created_at"),
        _epoch("updated_at"),
        _epoch("cleaned_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_runtime_session"),
        sa.CheckConstraint(
            "(owner_type = 'conversation' AND runner_id IS NOT NULL AND binding_id IS NOT NULL"
            " AND conversation_id IS NOT NULL AND thread_id IS NOT NULL"
            " AND workflow_run_id IS NULL AND node_id IS NULL)"
            " OR (owner_type = 'workflow_run' AND workflow_run_id IS NOT NULL AND node_id IS NOT NULL"
            " AND runner_id IS NULL AND binding_id IS NULL AND conversation_id IS NULL"
            " AND thread_id IS NULL)",
            name="ck_agent_runtime_session_owner"),
        sa.CheckConstraint("status IN ('active', 'cleaned')", name="ck_agent_runtime_session_status"),
    )
    op.create_index("uq_agent_runtime_session_conversation_active", "agent_runtime_session",
                    ["runner_id", "binding_id", "conversation_id", "thread_id"], unique=True,
                    postgresql_where=sa.text(ACTIVE_CONVERSATION),
                    sqlite_where=sa.text(ACTIVE_CONVERSATION))
    op.create_index("uq_agent_runtime_session_workflow_active", "agent_runtime_session",
                    ["workflow_run_id", "node_id"], unique=True,
                    postgresql_where=sa.text(ACTIVE_WORKFLOW),
                    sqlite_where=sa.text(ACTIVE_WORKFLOW))

    op.create_table(
        "agent",
        _str("agent_id", 128, nullable=False),
        _json("config_json"),
        sa.Column("version", sa.Integer(), nullable=False),
        _epoch("created_at"),
        _epoch("updated_at"),
        sa.PrimaryKeyConstraint("agent_id", name="pk_agent"),
    )

    op.create_table(
        "knowledge_document",
        _id(),
        _str("kb_id", 128, nullable=False),
        _str("doc_id", 300, nullable=False),
        _str("title", 512),
        sa.Column("content", sa.Text(), nullable=False),
        _json("metadata_json"),
        _epoch("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_knowledge_document"),
        sa.UniqueConstraint("kb_id", "doc_id", name="uq_knowledge_document_kb_id_doc_id"),
    )
    if _is_postgres():
        op.create_index("ix_knowledge_document_fts", "knowledge_document", [sa.text(KNOWLEDGE_FTS)],
                        postgresql_using="gin")
    else:
        # rowid = knowledge_document.id; kept in sync by store.knowledge.KnowledgeStore.
        op.execute("CREATE VIRTUAL TABLE knowledge_fts USING fts5("
                   "title, content, kb_id UNINDEXED, tokenize = 'unicode61')")

    op.create_table(
        "agent_kv",
        _id(),
        _str("area", 16, nullable=False),
        _str("namespace", nullable=False),
        _str("key", 512, nullable=False),
        _json("value_json", nullable=True),
        _epoch("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_agent_kv"),
        sa.UniqueConstraint("area", "namespace", "key", name="uq_agent_kv_area_namespace_key"),
        sa.CheckConstraint("area IN ('plugin', 'workspace')", name="ck_agent_kv_area"),
    )


def downgrade() -> None:
    if not _is_postgres():
        op.execute("DROP TABLE IF EXISTS knowledge_fts")
    for table in ("agent_kv", "knowledge_document", "agent", "agent_runtime_session",
                  "agent_run_event", "agent_run", "agent_artifact", "agent_runner_state",
                  "transcript_counter", "transcript", "event_log"):
        op.drop_table(table)  # indexes go with their table
