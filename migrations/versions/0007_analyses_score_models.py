"""Archive: the models each archived score came from, so that a patient's course compares only
scores of the same models (a model upgrade made an unchanged film 'extent -1.6 since the
previous study').

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.add_column(sa.Column("score_models", sa.String(128)))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_column("score_models")
