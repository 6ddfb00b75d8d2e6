"""Export: deliver result instances to each destination through a persisted outbox.

Workers add rows (:func:`add_to_outbox`); whoever runs :func:`deliver_due`
(the node's exporter thread, or a worker right after it made the results)
claims due rows atomically, sends them with one association per destination,
and records the outcome. Failures back off exponentially; after
``export_max_attempts`` a row is dead until ``cxr-node export retry``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import or_, select, update

from node.db import audit
from node.db.audit import EventKind, Outcome
from node.db.engine import session_scope
from node.db.tables import OutboxItem, OutboxState, utcnow
from node.exceptions import SendError
from node.scu import send_datasets
from node.settings import Destination, Settings, get_settings
from node.tls import client_context

logger = logging.getLogger(__name__)

# A row claimed longer ago than this belongs to a process that died.
CLAIM_TIMEOUT = timedelta(minutes=5)
MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True)
class OutputFile:
    """A result instance written to disk, ready to export."""

    kind: str  # "sr", "sc", "seg"
    path: Path
    sop_instance_uid: str
    study_instance_uid: str | None
    source_sop_instance_uid: str | None


def add_to_outbox(outputs: Iterable[OutputFile], settings: Settings | None = None) -> int:
    """One pending row per output and destination; existing rows are left alone
    (so a retried task adds nothing). Returns the number of new rows."""
    settings = settings or get_settings()
    added = 0
    with session_scope() as session:
        for output in outputs:
            for destination in settings.destinations:
                exists = session.scalar(
                    select(OutboxItem.id).where(
                        OutboxItem.sop_instance_uid == output.sop_instance_uid,
                        OutboxItem.destination == str(destination),
                    )
                )
                if exists is not None:
                    continue
                session.add(
                    OutboxItem(
                        sop_instance_uid=output.sop_instance_uid,
                        source_sop_instance_uid=output.source_sop_instance_uid,
                        study_instance_uid=output.study_instance_uid,
                        kind=output.kind,
                        path=str(output.path),
                        destination=str(destination),
                        state=OutboxState.PENDING,
                        attempts=0,
                    )
                )
                added += 1
    return added


def backoff_seconds(attempts: int, base: float) -> float:
    """Exponential back-off: base, 2 base, 4 base, ... capped at an hour."""
    return min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))


def _claim(source_sop_instance_uid: str | None = None, limit: int = 100) -> list[OutboxItem]:
    """Atomically move due rows to SENDING so no other process sends them too."""
    now = utcnow()
    claimed: list[OutboxItem] = []
    with session_scope() as session:
        query = (
            select(OutboxItem)
            .where(
                or_(
                    (OutboxItem.state == OutboxState.PENDING) & (OutboxItem.next_attempt_at <= now),
                    (OutboxItem.state == OutboxState.SENDING) & (OutboxItem.updated_at < now - CLAIM_TIMEOUT),
                )
            )
            .order_by(OutboxItem.id)
            .limit(limit)
        )
        if source_sop_instance_uid:
            query = query.where(OutboxItem.source_sop_instance_uid == source_sop_instance_uid)
        for item in session.scalars(query):
            won = session.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item.id, OutboxItem.state == item.state)
                .where(OutboxItem.updated_at == item.updated_at)
                .values(state=OutboxState.SENDING, updated_at=now)
            )
            if won.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(item)
    return claimed


def deliver_due(
    settings: Settings | None = None,
    source_sop_instance_uid: str | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, int]:
    """Send every due outbox row; returns counts by outcome (sent/failed/dead).

    ``seconds``, when given, receives the C-STORE time of each kind sent ("sr", "sc", "seg").
    """
    settings = settings or get_settings()
    counts: dict[str, int] = defaultdict(int)
    by_destination: dict[str, list[OutboxItem]] = defaultdict(list)
    for item in _claim(source_sop_instance_uid):
        by_destination[item.destination].append(item)
    for destination_text, items in by_destination.items():
        for outcome in _deliver(Destination.parse(destination_text), items, settings, seconds):
            counts[outcome] += 1
    return dict(counts)


def _deliver(
    destination: Destination,
    items: list[OutboxItem],
    settings: Settings,
    seconds: dict[str, float] | None = None,
) -> list[str]:
    started = time.monotonic()
    datasets, readable = [], []
    outcomes: list[str] = []
    for item in items:
        try:
            datasets.append(dcmread(item.path))
            readable.append(item)
        except Exception as exc:  # a missing/corrupt output will not get better
            outcomes.append(_finish(item, None, f"cannot read {item.path}: {exc}", settings, 0, dead=True))
    if not readable:
        return outcomes
    try:
        results = send_datasets(
            datasets,
            destination,
            settings.ae_title,
            timeout=settings.network_timeout,
            sources=[str(i.id) for i in readable],
            ssl_context=client_context(settings),
        )
    except (SendError, OSError) as exc:
        elapsed = (time.monotonic() - started) * 1000
        return outcomes + [_finish(item, None, str(exc), settings, elapsed) for item in readable]
    elapsed = (time.monotonic() - started) * 1000 / max(1, len(readable))
    by_id = {r.source: r for r in results}
    for item in readable:
        result = by_id.get(str(item.id))
        if seconds is not None and result is not None:
            seconds[item.kind] = seconds.get(item.kind, 0.0) + result.seconds
        if result is not None and result.ok:
            outcomes.append(_finish(item, result.status, None, settings, elapsed))
        else:
            status = None if result is None else result.status
            error = "no response" if result is None else result.describe()
            if status is not None:
                error = f"status {error}"
            outcomes.append(_finish(item, status, error, settings, elapsed))
    return outcomes


def _finish(
    item: OutboxItem,
    status: int | None,
    error: str | None,
    settings: Settings,
    elapsed_ms: float,
    dead: bool = False,
) -> str:
    """Record one attempt's outcome on the row and in the audit log."""
    uids = {
        "study_instance_uid": item.study_instance_uid,
        "sop_instance_uid": item.sop_instance_uid,
    }
    with session_scope() as session:
        row = session.get(OutboxItem, item.id)
        assert row is not None
        row.attempts += 1
        if error is None:
            row.state, row.last_error = OutboxState.SENT, None
        elif dead or row.attempts >= settings.export_max_attempts:
            row.state, row.last_error = OutboxState.DEAD, error[:512]
        else:
            row.state, row.last_error = OutboxState.PENDING, error[:512]
            delay = backoff_seconds(row.attempts, settings.export_backoff_seconds)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        state, attempts = row.state, row.attempts
    where = f"{item.kind} to {item.destination}"
    if state == OutboxState.SENT:
        audit.record(
            EventKind.EXPORT_SENT,
            Outcome.SUCCESS,
            f"{where} (attempt {attempts})",
            duration_ms=elapsed_ms,
            **uids,
        )
        return "sent"
    if state == OutboxState.DEAD:
        logger.error("export of %s gave up after %d attempts: %s", item.sop_instance_uid, attempts, error)
        audit.record(
            EventKind.EXPORT_DEAD,
            Outcome.FAILURE,
            f"{where}: gave up after {attempts} attempts: {error}",
            duration_ms=elapsed_ms,
            **uids,
        )
        return "dead"
    logger.warning(
        "export of %s to %s failed (attempt %d): %s", item.sop_instance_uid, item.destination, attempts, error
    )
    audit.record(
        EventKind.EXPORT_FAILED,
        Outcome.FAILURE,
        f"{where} (attempt {attempts}): {error}",
        duration_ms=elapsed_ms,
        **uids,
    )
    return "failed"


def retry_dead(ids: Iterable[int] = (), *, all_dead: bool = False) -> int:
    """Give dead rows (every one, or the named ones that are dead or waiting for their next
    attempt) a fresh set of attempts, due now. Returns how many. A row being sent at this moment
    is left alone: reset, it would be claimed again and sent twice."""
    ids = list(ids)
    with session_scope() as session:
        if ids:
            query = update(OutboxItem).where(
                OutboxItem.id.in_(ids), OutboxItem.state.in_((OutboxState.DEAD, OutboxState.PENDING))
            )
        elif all_dead:
            query = update(OutboxItem).where(OutboxItem.state == OutboxState.DEAD)
        else:
            return 0
        result = session.execute(
            query.values(state=OutboxState.PENDING, attempts=0, next_attempt_at=utcnow())
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


def outbox_rows(state: str | None = None) -> list[OutboxItem]:
    with session_scope() as session:
        query = select(OutboxItem).order_by(OutboxItem.id)
        if state:
            query = query.where(OutboxItem.state == state)
        return list(session.scalars(query))


class Exporter:
    """The node's background delivery loop."""

    def __init__(self, settings: Settings, interval: float = 1.0) -> None:
        self.settings = settings
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="exporter", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                deliver_due(self.settings)
            except Exception:
                logger.exception("export loop iteration failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
