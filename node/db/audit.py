"""Writing and reading audit events.

:func:`record` never raises: the audit log must not take the SCP down. A
failure to write is logged (with the UIDs, which is all an event holds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import TypedDict

from pydicom.dataset import Dataset
from sqlalchemy import BindParameter, bindparam, select

from node.db.engine import session_scope
from node.db.tables import AuditEvent

logger = logging.getLogger(__name__)


class EventKind(StrEnum):
    NODE_STARTED = "node.started"
    NODE_STOPPED = "node.stopped"
    ASSOCIATION_ACCEPTED = "association.accepted"
    ASSOCIATION_REJECTED = "association.rejected"
    ASSOCIATION_ABORTED = "association.aborted"
    ECHO = "echo"
    INSTANCE_RECEIVED = "instance.received"
    INSTANCE_REJECTED = "instance.rejected"
    INSTANCE_DUPLICATE = "instance.duplicate"
    INSTANCE_INELIGIBLE = "instance.ineligible"
    SPOOL_SWEPT = "spool.swept"
    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_RETRIED = "job.retried"
    RESULT_CREATED = "result.created"
    TRIAGE_URGENT = "triage.urgent"
    TRIAGE_NOTIFIED = "triage.notified"
    EXPORT_SENT = "export.sent"
    EXPORT_FAILED = "export.failed"
    EXPORT_DEAD = "export.dead"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    WARNING = "warning"
    INFO = "info"


class InstanceUIDs(TypedDict):
    """The UIDs an audit event carries about one instance (never patient data)."""

    study_instance_uid: str | None
    series_instance_uid: str | None
    sop_instance_uid: str | None


def instance_uids(ds: Dataset, sop_instance_uid: str | None = None) -> InstanceUIDs:
    """Study, series and SOP Instance UIDs of a data set, None where absent."""

    def uid(keyword: str) -> str | None:
        return str(ds.get(keyword, "") or "") or None

    return InstanceUIDs(
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        sop_instance_uid=sop_instance_uid or uid("SOPInstanceUID"),
    )


def record(
    kind: EventKind | str,
    outcome: Outcome | str = Outcome.SUCCESS,
    message: str = "",
    *,
    calling_ae: str | None = None,
    peer: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    duration_ms: float | None = None,
    url: str | None = None,
) -> bool:
    """Append one event. Returns False (and logs) if it could not be written."""
    event = AuditEvent(
        kind=str(kind),
        outcome=str(outcome),
        message=message[:512],
        calling_ae=calling_ae,
        peer=peer,
        study_instance_uid=study_instance_uid or None,
        series_instance_uid=series_instance_uid or None,
        sop_instance_uid=sop_instance_uid or None,
        duration_ms=duration_ms,
    )
    try:
        with session_scope(url) as session:
            session.add(event)
        return True
    except Exception:
        logger.exception("could not write audit event %s for SOP instance %s", kind, sop_instance_uid)
        return False


def _inline(name: str, value: str) -> BindParameter[str]:
    """A value rendered into the SQL (quoted by SQLAlchemy), so that PostgreSQL plans for it:
    with a bound parameter it settles on a generic plan after a few runs, which for a rare
    kind or AE walks the whole created_at index instead of the (kind, created_at) one."""
    return bindparam(name, value, literal_execute=True)


def events(
    *,
    after_id: int = 0,
    study_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    kind: str | None = None,
    calling_ae: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    newest: bool = False,
    url: str | None = None,
) -> list[AuditEvent]:
    """Events with id > ``after_id`` in id order (``newest``: the last ``limit`` of them).

    ``kind`` is an event kind (``instance.received``) or a prefix of kinds (``export``);
    ``since`` is inclusive and ``until`` exclusive, both timezone-aware.
    """
    query = select(AuditEvent).where(AuditEvent.id > after_id)
    if study_instance_uid:
        query = query.where(AuditEvent.study_instance_uid == study_instance_uid)
    if sop_instance_uid:
        query = query.where(AuditEvent.sop_instance_uid == sop_instance_uid)
    if kind:
        # Equality where it names a kind: an index on (kind, created_at) serves it on every
        # backend (PostgreSQL uses a b-tree for LIKE 'x%' only under the C collation).
        if kind in EventKind._value2member_map_:
            query = query.where(AuditEvent.kind == _inline("kind", kind))
        else:
            query = query.where(AuditEvent.kind.startswith(kind))
    if calling_ae:
        query = query.where(AuditEvent.calling_ae == _inline("calling_ae", calling_ae))
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    query = query.order_by(AuditEvent.id.desc() if newest else AuditEvent.id)
    if limit is not None:
        query = query.limit(limit)
    with session_scope(url) as session:
        rows = list(session.scalars(query))
    return rows[::-1] if newest else rows


def format_event(event: AuditEvent) -> str:
    """One line per event, like a log file."""
    stamp = (
        event.created_at.isoformat(timespec="milliseconds")
        if isinstance(event.created_at, datetime)
        else str(event.created_at)
    )
    parts = [stamp, f"{event.kind:<22}", f"{event.outcome:<7}"]
    if event.calling_ae:
        parts.append(f"ae={event.calling_ae}")
    if event.study_instance_uid:
        parts.append(f"study={event.study_instance_uid}")
    if event.sop_instance_uid:
        parts.append(f"sop={event.sop_instance_uid}")
    if event.duration_ms is not None:
        parts.append(f"{event.duration_ms:.0f}ms")
    if event.message:
        parts.append(event.message)
    return " ".join(parts)


def tail(
    *,
    lines: int = 20,
    follow: bool = False,
    study_instance_uid: str | None = None,
    poll_seconds: float = 1.0,
    max_seconds: float | None = None,
    url: str | None = None,
) -> Iterator[str]:
    """The last ``lines`` events, then (``follow``) new ones as they arrive, like ``tail -f``."""
    last_id = 0
    for event in events(study_instance_uid=study_instance_uid, limit=lines, newest=True, url=url):
        last_id = event.id
        yield format_event(event)
    if not follow:
        return
    if last_id == 0:
        # Nothing matched yet: start from the newest id overall, not from the beginning.
        newest = events(limit=1, newest=True, url=url)
        last_id = newest[-1].id if newest else 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while deadline is None or time.monotonic() < deadline:
        for event in events(after_id=last_id, study_instance_uid=study_instance_uid, url=url):
            last_id = event.id
            yield format_event(event)
        time.sleep(poll_seconds)
