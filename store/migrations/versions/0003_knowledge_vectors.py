"""Knowledge vectors: embeddings of knowledge chunks for embedding-backed knowledge bases.

Self-contained (no imports from ``store.models``), like every revision. Works on
Postgres and SQLite alike: vectors are JSON lists searched by brute-force cosine
(pgvector is not required).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "knowledge_vector",
        sa.Column("id", BIGINT_PK, primary_key=True, autoincrement=True),
        sa.Column("document_id", sa.BigInteger(), nullable=False),
        sa.Column("kb_id", sa.String(128), nullable=False),
        sa.Column("model_id", sa.String(256), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector_json", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_knowledge_vector"),
        sa.UniqueConstraint("document_id", "model_id", name="uq_knowledge_vector_document_id_model_id"),
    )
    op.create_index("ix_knowledge_vector_kb_id_model_id", "knowledge_vector", ["kb_id", "model_id"])


def downgrade() -> None:
    op.drop_table("knowledge_vector")  # its index goes with it
