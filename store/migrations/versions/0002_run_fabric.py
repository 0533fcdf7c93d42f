"""Run fabric: idempotent intake and owned runs.

* ``event_log.body_sha256`` — digest of the submitting request, so a re-sent ``event_id`` is
  recognised as a retry (same digest) or refused as a conflict (another digest);
* ``agent_run.owner_host`` — the host driving the run, indexed with the status for the sweep
  that finalizes runs of hosts that are gone;
* ``runnerhost_host`` — every host and its heartbeat.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("event_log") as batch:
        batch.add_column(sa.Column("body_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("agent_run") as batch:
        batch.add_column(sa.Column("owner_host", sa.String(64), nullable=True))
    op.create_index("ix_agent_run_owner_host_status", "agent_run", ["owner_host", "status"])
    op.create_table(
        "runnerhost_host",
        sa.Column("host_id", sa.String(64), nullable=False),
        sa.Column("ray_address", sa.String(256), nullable=True),
        sa.Column("ray_session", sa.String(256), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("stopped_at", sa.Double(), nullable=True),
        sa.Column("info_json", JSON, nullable=False),
        sa.PrimaryKeyConstraint("host_id", name="pk_runnerhost_host"),
    )


def downgrade() -> None:
    op.drop_table("runnerhost_host")
    op.drop_index("ix_agent_run_owner_host_status", table_name="agent_run")
    with op.batch_alter_table("agent_run") as batch:
        batch.drop_column("owner_host")
    with op.batch_alter_table("event_log") as batch:
        batch.drop_column("body_sha256")
