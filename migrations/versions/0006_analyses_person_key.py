"""Archive: a keyed hash of each image's birth date and sex, so that two people who share a
Patient ID (another issuer, no Issuer of Patient ID) are not one patient's course.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.add_column(sa.Column("person_key", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("analyses") as batch:
        batch.drop_column("person_key")
