"""Archive: each image's Rows and Columns, so that an SR can outline an earlier image as a whole.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.add_column(sa.Column("rows", sa.Integer()))
        batch.add_column(sa.Column("columns", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_column("columns")
        batch.drop_column("rows")
