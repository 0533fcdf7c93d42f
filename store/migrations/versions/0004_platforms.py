"""Platform delivery, interactions, schedules and intake claims (SPEC §13).

* ``delivery``: one row per (run, target, part) — the platform message a run's results went to;
* ``interaction``: a runner's ``interaction.requested`` and its answer;
* ``schedule``: cron schedules per agent;
* ``intake_claim``: "done once" claims (a schedule tick, a platform event id).

Self-contained (no imports from ``store.models``): a migration is history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EPOCH = sa.Double()


def _id() -> sa.Column:
    return sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True)


def _str(name: str, length: int = 256, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _epoch(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, EPOCH, nullable=nullable)


def _json(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, JSON, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "delivery",
        _id(),
        _str("run_id", 128, nullable=False),
        _str("target_key", 160, nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        _str("platform", 32, nullable=False),
        _str("connection", 128, nullable=False),
        _json("target_json"),
        _str("platform_message_id"),
        _str("status", 16, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _str("content_sha256", 64),
        sa.Column("content_length", sa.Integer(), nullable=False),
        _epoch("created_at"),
        _epoch("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_delivery"),
        sa.UniqueConstraint("run_id", "target_key", "part", name="uq_delivery_run_id_target_key_part"),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'streaming', 'delivered', 'failed', 'unknown')",
            name="ck_delivery_status"),
    )

    op.create_table(
        "interaction",
        _str("id", 64, nullable=False),
        _str("interaction_id", 255, nullable=False),
        _str("run_id", 128, nullable=False),
        _str("agent_id", 128),
        _str("conversation_id"),
        _str("thread_id"),
        _str("actor_id"),
        _str("status", 16, nullable=False),
        _json("request_json"),
        _json("origin_json"),
        _json("answer_json", nullable=True),
        _str("answer_event_id", 128),
        _epoch("created_at"),
        _epoch("expires_at"),
        _epoch("answered_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_interaction"),
        sa.UniqueConstraint("run_id", "interaction_id", name="uq_interaction_run_id_interaction_id"),
        sa.CheckConstraint("status IN ('pending', 'answered', 'expired')", name="ck_interaction_status"),
    )
    op.create_index("ix_interaction_status_expires_at", "interaction", ["status", "expires_at"])

    op.create_table(
        "schedule",
        _id(),
        _str("agent_id", 128, nullable=False),
        _str("schedule_id", 64, nullable=False),
        _str("cron", 128, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        _json("data_json"),
        _epoch("next_fire_at", nullable=True),
        _epoch("last_fired_at", nullable=True),
        _epoch("created_at"),
        _epoch("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_schedule"),
        sa.UniqueConstraint("agent_id", "schedule_id", name="uq_schedule_agent_id_schedule_id"),
    )
    op.create_index("ix_schedule_next_fire_at", "schedule", ["next_fire_at"])

    op.create_table(
        "intake_claim",
        _id(),
        _str("scope", 192, nullable=False),
        _str("claim_key", 192, nullable=False),
        _str("owner", 128, nullable=False),
        _epoch("claimed_at"),
        _epoch("done_at", nullable=True),
        _json("result_json", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intake_claim"),
        sa.UniqueConstraint("scope", "claim_key", name="uq_intake_claim_scope_claim_key"),
    )


def downgrade() -> None:
    for table in ("intake_claim", "schedule", "interaction", "delivery"):
        op.drop_table(table)  # indexes go with their table
