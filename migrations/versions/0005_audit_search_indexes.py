"""Indexes for `cxr-node audit search`: event kind and calling AE, each with the time.

A compliance query names an event or a calling AE and a time range; with
(kind, created_at) and (calling_ae, created_at) the database reads just that
slice instead of every row of the kind or the range (benchmarks/bench_audit.py).
(kind, created_at) also serves the "last received" gauges of /metrics.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_kind_created_at", "audit_events", ["kind", "created_at"])
    op.create_index("ix_audit_events_calling_ae_created_at", "audit_events", ["calling_ae", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_calling_ae_created_at", "audit_events")
    op.drop_index("ix_audit_events_kind_created_at", "audit_events")
