"""Ingest: what happens to one received data set, apart from the network.

``Ingest.receive`` is the plain core behind the C-STORE handler (and behind
the start-up sweep): parse the header, check it can be understood, store it
atomically in the spool, record it, apply the routing rules and queue it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from node import routing
from node.db import audit
from node.db.audit import EventKind, InstanceUIDs, Outcome, instance_uids
from node.db.engine import session_scope
from node.db.tables import AuditEvent, Instance, InstanceState, utcnow
from node.exceptions import DatabaseUnavailableError, DatasetMismatchError, InvalidInstanceError, QueueError
from node.image_pixel import check_pixels
from node.queue import enqueue_analysis
from node.settings import Settings, get_settings
from node.spool import Spool, is_valid_uid

logger = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000


class KeyedLocks:
    """One lock per key, held only while someone uses it (no table that grows for ever)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._held.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if users[0] == 0:
                    del self._held[key]


# Per SOP Instance UID, across the associations and the sweep of this process (the one SCP):
# storing, recording and routing one instance is never interleaved with another copy of it.
INSTANCE_LOCKS = KeyedLocks()


@dataclass(frozen=True)
class ReceiveResult:
    status: int
    sop_instance_uid: str
    path: Path | None
    duplicate: bool = False
    eligible: bool | None = None
    queued: bool = False
    reason: str | None = None


def parse_header(data: bytes) -> Dataset:
    """Decode a received data set (with its file meta) enough to route it.

    Raises InvalidInstanceError naming what is wrong.
    """
    try:
        ds = dcmread(BytesIO(data), force=True)
        sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")
        sop_class_uid = str(ds.get("SOPClassUID", "") or "")
    except Exception as exc:  # pydicom raises more than ValueError on malformed input
        raise InvalidInstanceError(f"data set cannot be decoded: {exc}"[:400]) from exc
    if not is_valid_uid(sop_instance_uid):
        raise InvalidInstanceError("SOP Instance UID (0008,0018) is missing or not a valid UID")
    if not sop_class_uid:
        raise InvalidInstanceError("SOP Class UID (0008,0016) is missing")
    # Type 1 in every composite IOD: the results go back into the study and the series beside
    # the film, and the patient's course is told apart by study.
    for keyword, name in (
        ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
        ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ):
        if not is_valid_uid(str(ds.get(keyword, "") or "")):
            raise InvalidInstanceError(f"{name} is missing or not a valid UID")
    decode_all(ds)
    check_pixels(ds)
    return ds


def other_data_set(stored: Path, data: bytes) -> str | None:
    """How a second copy (``data``, as received) differs from the stored file: None when it is
    the same data set (the same bytes, or the same elements under another file meta: a new
    pynetdicom version, another transfer syntax that decodes to the same values), else "with
    other content" or "in another transfer syntax" (compressed pixels, say: not compared)."""
    old = stored.read_bytes()
    if old == data:
        return None
    try:
        first, second = dcmread(BytesIO(old), force=True), dcmread(BytesIO(data), force=True)
        if first == second:  # every element, the file meta aside
            return None
    except Exception:  # pydicom raises many types; what cannot be compared is kept
        return "with other content"
    syntax = [getattr(d, "file_meta", Dataset()).get("TransferSyntaxUID") for d in (first, second)]
    return "with other content" if syntax[0] == syntax[1] else "in another transfer syntax"


def decode_all(ds: Dataset) -> None:
    """Decode every element, in sequences too, now rather than when routing or the worker
    first touches it: a value that does not fit its VR (PS3.5 6.2) is then a 0xC210 naming
    the attribute, not an internal error after the instance was stored."""
    stack = [ds]
    while stack:  # iterative: sequences may nest deeper than the recursion limit
        current = stack.pop()
        for tag in list(current.keys()):
            try:
                elem = current[tag]
            except Exception as exc:
                raise InvalidInstanceError(f"attribute {tag} cannot be decoded: {exc}"[:400]) from exc
            if elem.VR == "SQ":
                stack.extend(item for item in elem.value if isinstance(item, Dataset))


def _instance_row(
    ds: Dataset, uids: InstanceUIDs, path: Path, state: str, reason: str | None, calling_ae: str | None
) -> Instance:
    return Instance(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        study_instance_uid=uids["study_instance_uid"],
        series_instance_uid=uids["series_instance_uid"],
        calling_ae=calling_ae,
        path=str(path),
        state=state,
        reason=reason,
    )


class Ingest:
    """Stores, records, routes and queues received instances."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.spool = Spool(self.settings.spool_path, self.settings.min_free_bytes)

    def receive(
        self,
        data: bytes,
        *,
        affected_sop_instance_uid: str = "",
        affected_sop_class_uid: str = "",
        calling_ae: str | None = None,
        peer: str | None = None,
        started: float | None = None,
    ) -> ReceiveResult:
        """Handle one C-STORE data set.

        Raises InvalidInstanceError, SpoolFullError, DatabaseUnavailableError or OSError.
        """
        started = time.monotonic() if started is None else started
        ds = parse_header(data)
        sop_instance_uid = str(ds.SOPInstanceUID)
        if affected_sop_instance_uid and affected_sop_instance_uid != sop_instance_uid:
            raise InvalidInstanceError(
                f"SOP Instance UID (0008,0018) {sop_instance_uid} differs from the request's "
                f"Affected SOP Instance UID {affected_sop_instance_uid}"
            )
        if affected_sop_class_uid and affected_sop_class_uid != str(ds.SOPClassUID):
            raise DatasetMismatchError(
                f"SOP Class UID (0008,0016) {ds.SOPClassUID} differs from the request's "
                f"Affected SOP Class UID {affected_sop_class_uid}"
            )
        uids = instance_uids(ds)
        with INSTANCE_LOCKS.hold(sop_instance_uid):
            # A second copy waits here until the first is recorded (or refused and removed),
            # so it is never acknowledged as a duplicate of a file about to be taken back.
            path, created = self.spool.store(sop_instance_uid, data)
            elapsed_ms = (time.monotonic() - started) * 1000
            if not created and self._recorded(sop_instance_uid):
                message = "already received; kept the stored copy"
                if difference := other_data_set(path, data):
                    other = self.spool.keep_other_copy(sop_instance_uid, data)
                    message = (
                        f"already received, {difference}; the stored copy is the one analysed, "
                        f"this one kept as {other.parent.name}/{other.name}"
                    )
                if not audit.record(
                    EventKind.INSTANCE_DUPLICATE,
                    Outcome.WARNING,
                    message,
                    calling_ae=calling_ae,
                    peer=peer,
                    duration_ms=elapsed_ms,
                    **uids,
                ):
                    raise DatabaseUnavailableError(
                        f"could not record duplicate SOP instance {sop_instance_uid}"
                    )
                return ReceiveResult(STATUS_SUCCESS, sop_instance_uid, path, duplicate=True)
            # New, or a file a crash left without its row: recorded as this association's.
            try:
                self._record_received(ds, uids, path, len(data), calling_ae, peer, elapsed_ms)
            except SQLAlchemyError as exc:
                # Not recorded, so not acknowledged: the modality keeps the instance and
                # retries (0xA700), and the spool holds nothing the audit cannot account for.
                if created:
                    path.unlink(missing_ok=True)
                logger.error("database unavailable, refusing SOP instance %s: %s", sop_instance_uid, exc)
                raise DatabaseUnavailableError(f"audit database unavailable: {type(exc).__name__}") from exc
            try:
                return self.route(ds, path, calling_ae=calling_ae)
            except SQLAlchemyError:
                # Recorded as RECEIVED: the sweep routes and queues it once the database is back.
                logger.exception("database unavailable after recording SOP instance %s", sop_instance_uid)
                return ReceiveResult(STATUS_SUCCESS, sop_instance_uid, path)

    @classmethod
    def _recorded(cls, sop_instance_uid: str) -> bool:
        """Whether the instance has its row (DatabaseUnavailableError when the database is away)."""
        try:
            return cls._state(sop_instance_uid)[0] is not None
        except SQLAlchemyError as exc:
            raise DatabaseUnavailableError(f"audit database unavailable: {type(exc).__name__}") from exc

    def _record_received(
        self,
        ds: Dataset,
        uids: InstanceUIDs,
        path: Path,
        size: int,
        calling_ae: str | None,
        peer: str | None,
        elapsed_ms: float,
    ) -> None:
        """The instance's row and its ``instance.received`` event, in one transaction.

        A row left by an earlier attempt whose commit was acknowledged too late
        (the connection died after COMMIT) is kept, so a retry is not a second row.
        """
        sop_instance_uid = str(ds.SOPInstanceUID)
        with session_scope() as session:
            if session.get(Instance, sop_instance_uid) is None:
                session.add(_instance_row(ds, uids, path, InstanceState.RECEIVED, None, calling_ae))
            session.add(
                AuditEvent(
                    kind=str(EventKind.INSTANCE_RECEIVED),
                    outcome=str(Outcome.SUCCESS),
                    message=f"{ds.get('Modality', '')} {size} bytes",
                    calling_ae=calling_ae,
                    peer=peer,
                    duration_ms=elapsed_ms,
                    **uids,
                )
            )

    def route(self, ds: Dataset, path: Path, *, calling_ae: str | None = None) -> ReceiveResult:
        """Apply the routing rules to a stored instance and queue it if eligible."""
        sop_instance_uid = str(ds.SOPInstanceUID)
        uids = instance_uids(ds)
        try:
            decision = routing.decide(ds, self.settings.min_patient_age)
        except Exception as exc:  # stored and recorded already: kept, not analysed, and said why
            logger.exception("routing rules failed on SOP instance %s", sop_instance_uid)
            decision = routing.Decision(False, f"routing rules failed on this header: {type(exc).__name__}")
        state = InstanceState.RECEIVED if decision.eligible else InstanceState.INELIGIBLE
        self._save_instance(ds, uids, path, state, decision.reason, calling_ae)
        if not decision.eligible:
            audit.record(
                EventKind.INSTANCE_INELIGIBLE,
                Outcome.INFO,
                f"stored, not analysed: {decision.reason}",
                calling_ae=calling_ae,
                **uids,
            )
            return ReceiveResult(
                STATUS_SUCCESS, sop_instance_uid, path, eligible=False, reason=decision.reason
            )
        queued = self.queue(sop_instance_uid, path, uids, calling_ae)
        return ReceiveResult(STATUS_SUCCESS, sop_instance_uid, path, eligible=True, queued=queued)

    def queue(self, sop_instance_uid: str, path: Path, uids: InstanceUIDs, calling_ae: str | None) -> bool:
        """Send the analysis task; on a broker failure the instance stays RECEIVED for the sweep."""
        try:
            task_id = enqueue_analysis(sop_instance_uid, path, self.settings)
        except QueueError as exc:
            logger.warning("SOP instance %s stored but not queued: %s", sop_instance_uid, exc)
            audit.record(
                EventKind.JOB_QUEUED,
                Outcome.FAILURE,
                f"broker unavailable, will be re-queued by the sweep: {exc}"[:512],
                calling_ae=calling_ae,
                **uids,
            )
            return False
        with session_scope() as session:
            instance = session.get(Instance, sop_instance_uid)
            if instance is not None and instance.state in (
                InstanceState.RECEIVED,
                InstanceState.QUEUED,
                InstanceState.RUNNING,
            ):
                instance.state, instance.updated_at = InstanceState.QUEUED, utcnow()
        audit.record(
            EventKind.JOB_QUEUED,
            Outcome.SUCCESS,
            f"task {task_id}",
            calling_ae=calling_ae,
            **uids,
        )
        return True

    def _save_instance(
        self,
        ds: Dataset,
        uids: InstanceUIDs,
        path: Path,
        state: str,
        reason: str | None,
        calling_ae: str | None,
    ) -> None:
        sop_instance_uid = str(ds.SOPInstanceUID)
        try:
            with session_scope() as session:
                instance = session.get(Instance, sop_instance_uid)
                if instance is None:
                    session.add(_instance_row(ds, uids, path, state, reason, calling_ae))
                elif instance.state != InstanceState.RECEIVED:
                    # Routed already (queued, analysed, ...): a late second routing changes nothing.
                    logger.info("SOP instance %s already %s", sop_instance_uid, instance.state)
                else:
                    instance.state = state
                    instance.reason = reason
                    instance.updated_at = utcnow()
        except IntegrityError:
            # Another association recorded the same instance a moment ago.
            logger.info("SOP instance %s already recorded", sop_instance_uid)

    @staticmethod
    def _state(sop_instance_uid: str) -> tuple[str | None, datetime | None]:
        with session_scope() as session:
            row = session.get(Instance, sop_instance_uid)
            return (row.state, row.updated_at) if row is not None else (None, None)

    @staticmethod
    def _wants_sweep(
        state: tuple[str | None, datetime | None], stale_before: datetime, running_lost: bool = False
    ) -> bool:
        """No row, recorded but never queued, or queued or running for too long (lost message);
        ``running_lost``: running at all (its worker is known to be gone)."""
        name, updated_at = state
        if name in (None, InstanceState.RECEIVED):
            return True
        if running_lost and name == InstanceState.RUNNING:
            return True
        return (
            name in (InstanceState.QUEUED, InstanceState.RUNNING)
            and updated_at is not None
            and updated_at < stale_before
        )

    # Start-up sweep -------------------------------------------------------------------
    def sweep(self, at_start: bool = False, running_lost: bool = False) -> int:
        """Queue every stored instance whose analysis is not under way; ``at_start`` (before
        the SCP listens), also remove the partial writes a crash left in the spool.
        ``running_lost``: every running job's worker is known to be gone (a node starting its
        embedded worker, after stopping any orphan of its home): re-queued at once, not after
        ``stale_job_seconds`` (15 minutes by default, for a study that may be urgent).

        Covers a crash between the spool write and the queue, a broker that was
        down, files whose database row was never written, and jobs whose
        message was lost (a broker restarted without persistence, a worker
        killed while holding it): those are re-queued once they have been
        queued or running for longer than ``stale_job_seconds``; tasks are
        idempotent, so a late original costs time, not correctness.
        Returns the count queued.

        Partial writes are removed only at start: while the SCP runs, ``tmp/`` holds the
        writes of associations in progress, which a periodic sweep must not pull from
        under them.
        """
        removed = self.spool.clean_tmp() if at_start else 0
        stale_before = utcnow() - timedelta(seconds=self.settings.stale_job_seconds)
        with session_scope() as session:
            known = {
                row.sop_instance_uid: (row.state, row.updated_at)
                for row in session.execute(
                    select(Instance.sop_instance_uid, Instance.state, Instance.updated_at)
                )
            }
        queued = 0
        for sop_instance_uid in self.spool.stored_uids():
            if not self._wants_sweep(known.get(sop_instance_uid, (None, None)), stale_before, running_lost):
                continue
            with INSTANCE_LOCKS.hold(sop_instance_uid):
                # The listing is older than this moment: an association may have recorded and
                # queued the instance since, and a worker analysed it. Look again, under its lock.
                state = self._state(sop_instance_uid)
                if not self._wants_sweep(state, stale_before, running_lost):
                    continue
                path = self.spool.path_for(sop_instance_uid)
                try:
                    ds = dcmread(path, stop_before_pixels=True, force=True)
                except Exception as exc:
                    logger.error("spool file for %s is unreadable: %s", sop_instance_uid, exc)
                    continue
                if state[0] in (InstanceState.QUEUED, InstanceState.RUNNING):  # stale
                    self.queue(sop_instance_uid, path, instance_uids(ds), None)
                    queued += 1
                    continue
                result = self.route(ds, path, calling_ae=None)
                queued += int(result.queued)
        audit.record(
            EventKind.SPOOL_SWEPT,
            Outcome.SUCCESS,
            f"re-queued {queued}; removed {removed} partial writes",
        )
        return queued
