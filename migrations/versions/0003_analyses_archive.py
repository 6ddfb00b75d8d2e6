"""Archive of analysed images: similar-case retrieval, the patient's course, triage.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "analyses",
        sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(64)),
        sa.Column("study_date", sa.Date()),
        sa.Column("study_time", sa.String(16)),
        sa.Column("predicted_class", sa.String(16), nullable=False),
        sa.Column("covid19_probability", sa.Float(), nullable=False),
        sa.Column("geographic_extent", sa.Float(), nullable=False),
        sa.Column("opacity", sa.Float(), nullable=False),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("embedding_model", sa.String(64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_analyses_study_instance_uid", "analyses", ["study_instance_uid"])
    op.create_index("ix_analyses_patient_key", "analyses", ["patient_key"])
    op.create_index("ix_analyses_embedding_model", "analyses", ["embedding_model"])


def downgrade() -> None:
    op.drop_table("analyses")
