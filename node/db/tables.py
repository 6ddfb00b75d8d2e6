"""SQLAlchemy 2 models. Alembic (``migrations/``) owns the schema; keep them in step."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements INTEGER PRIMARY KEY.
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class AuditEvent(Base):
    """One thing that happened. Rows are never updated or deleted (a trigger enforces it).

    No patient names, IDs or birth dates: only AE titles and UIDs.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_kind_created_at", "kind", "created_at"),
        Index("ix_audit_events_calling_ae_created_at", "calling_ae", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    peer: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    message: Mapped[str] = mapped_column(String(512), default="")
    duration_ms: Mapped[float | None] = mapped_column(Float)


class Instance(Base):
    """A received SOP instance and where it is in the pipeline (mutable state, not audit)."""

    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(256))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class InstanceState:
    """Values of :attr:`Instance.state`."""

    RECEIVED = "received"  # in the spool, not yet queued
    INELIGIBLE = "ineligible"  # stored, routing said not to analyse
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class OutboxState:
    """Values of :attr:`OutboxItem.state`."""

    PENDING = "pending"
    SENDING = "sending"  # claimed by one process; reclaimed if it dies
    SENT = "sent"
    DEAD = "dead"  # gave up after export_max_attempts; `cxr-node export retry`


class OutboxItem(Base):
    """One output instance to deliver to one destination (the export outbox)."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_sop_dest"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    source_sop_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(Text)
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True, default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ArchivedAnalysis(Base):
    """One analysed image in the node's archive: what similar-case retrieval searches and
    what a patient's course is read from.

    UIDs, dates and results only. ``patient_key`` is a keyed hash of Patient ID and
    Issuer of Patient ID (:func:`node.archive.patient_key`), never the ID itself; it
    stays inside the node and is never logged or exported.
    """

    __tablename__ = "analyses"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    patient_key: Mapped[str | None] = mapped_column(String(64), index=True)
    # keyed hash of birth date and sex (node.archive.person_key): one ID, two people
    person_key: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[date | None] = mapped_column(Date)
    study_time: Mapped[str | None] = mapped_column(String(16))
    predicted_class: Mapped[str] = mapped_column(String(16))
    covid19_probability: Mapped[float] = mapped_column(Float)
    geographic_extent: Mapped[float] = mapped_column(Float)
    opacity: Mapped[float] = mapped_column(Float)
    rows: Mapped[int | None] = mapped_column(Integer)  # of the image, for an SR's region on it
    columns: Mapped[int | None] = mapped_column(Integer)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    embedding_model: Mapped[str] = mapped_column(String(64), index=True)
    # the models the scores came from (node.archive.score_models): a course compares only these
    score_models: Mapped[str | None] = mapped_column(String(128))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
