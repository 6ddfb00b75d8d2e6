"""The analysis pipeline as plain functions: Celery tasks and ``cxr-node analyze`` call them.

decode -> eligibility -> models (segmentation, classification, severity, heatmap)
-> DICOM SR + SC (+ SEG) -> outbox -> audit rows, each with its duration.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from models.result import AnalysisResult, CaseContext, Triage
from node import archive, routing, triage
from node.db import audit
from node.db.audit import EventKind, InstanceUIDs, Outcome, instance_uids
from node.db.engine import session_scope
from node.db.tables import AuditEvent, Instance, InstanceState, utcnow
from node.export import OutputFile, add_to_outbox, deliver_due
from node.settings import Settings, get_settings
from workers.batching import MicroBatcher
from workers.exceptions import PermanentError, TemporaryError

logger = logging.getLogger(__name__)

ALGORITHM_NAME = "CXR Node"

# Stages of one study in the worker, in order (benchmarks print them): building each
# output ("sr", "sc", "seg"), the C-STORE of each ("export_sr", ...), and "export" the
# rest of the delivery (outbox claims, associations, audit rows).
STAGES = (
    "read",
    "decode",
    "preprocess",
    "models",
    "archive",
    "sr",
    "sc",
    "seg",
    "write",
    "database",
    "export_sr",
    "export_sc",
    "export_seg",
    "export",
)
SR_FIRST = ("sr",)  # built, written and sent before the others: it carries the triage decision
AFTER_SR = ("sc", "seg")


@contextmanager
def _timed(stages: dict[str, float] | None, name: str) -> Iterator[None]:
    """Add the block's wall time to ``stages[name]`` (seconds)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        if stages is not None:
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t


def algorithm_version(model_ids: dict[str, str]) -> str:
    """One short version naming the package and the exact set of models (LO, <= 64 chars)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("cxr-node")
    except PackageNotFoundError:
        package = "0"
    digest = hashlib.sha256(";".join(f"{k}={v}" for k, v in sorted(model_ids.items())).encode()).hexdigest()[
        :8
    ]
    return f"{package}+{digest}"


@dataclass
class Analysis:
    """One input's analysis, as ``analyze --json`` reports it."""

    input: str
    sop_instance_uid: str | None
    eligible: bool
    reason: str | None = None
    result: AnalysisResult | None = None
    outputs: list[OutputFile] = field(default_factory=list)
    extra_outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    stages: dict[str, float] = field(default_factory=dict)  # seconds per STAGES entry

    def as_json(self) -> dict[str, Any]:
        """The docs/architecture.md contract (plus ``error`` when the input failed)."""
        r = self.result
        out: dict[str, Any] = {
            "input": self.input,
            "sop_instance_uid": self.sop_instance_uid,
            "eligible": self.eligible,
            "reason": self.reason,
            "classification": None,
            "severity": None,
            "lungs": None,
            "models": None,
            "outputs": [str(o.path) for o in self.outputs] + [str(p) for p in self.extra_outputs],
            "seconds": round(self.seconds, 3),
        }
        if r is not None:  # only what the SR reports: nothing the quality check withheld is a number here
            if r.reported_class is not None:
                out["classification"] = {k: round(v, 4) for k, v in r.classification.items()}
            out["predicted_class"] = r.reported_class
            if r.quality.assessable:
                out["severity"] = r.severity.as_json()
                out["lungs"] = r.lungs_json()
            out["quality"] = r.quality.as_json()
            out["models"] = dict(r.models)
            out["heatmap"] = r.heatmap_method
            out.update((r.context or CaseContext()).as_json())
        if self.error is not None:
            out["error"] = self.error
        return out


@functools.lru_cache(maxsize=4)
def _batcher(window_ms: float, max_batch: int) -> MicroBatcher[Any, AnalysisResult]:
    from models.inference import get_analyzer

    return MicroBatcher(get_analyzer().analyze_batch, window_ms / 1000, max_batch)


def model_batcher(settings: Settings | None = None) -> MicroBatcher[Any, AnalysisResult] | None:
    """The process's micro-batcher when ``batch_window_ms`` is set, else None."""
    settings = settings or get_settings()
    if settings.batch_window_ms <= 0:
        return None
    return _batcher(settings.batch_window_ms, settings.batch_max)


def analyze_image(
    source: Dataset | Path | str,
    heatmap: str = "gradcam",
    stages: dict[str, float] | None = None,
    batcher: MicroBatcher[Any, AnalysisResult] | None = None,
) -> AnalysisResult:
    """Run every model on one image (a DICOM data set or a PNG/JPEG path).

    ``stages``, when given, receives the seconds spent in decode, preprocess and
    models. With a ``batcher`` (Grad-CAM heatmaps only), the networks run in its
    thread, together with the images other task threads hand over meanwhile.
    """
    from models.exceptions import ImageError
    from models.inference import get_analyzer
    from models.preprocessing import load_image

    with _timed(stages, "decode"):
        try:
            loaded = load_image(source)
        except ImageError as exc:
            raise PermanentError(str(exc)) from exc
    t = time.perf_counter()
    if batcher is not None and heatmap == "gradcam":
        result = batcher.submit(loaded)
    else:
        result = get_analyzer().analyze(loaded, heatmap=heatmap)
    if stages is not None:
        preprocess = float(result.extra.get("timings_s", {}).get("preprocess", 0.0))
        stages["preprocess"] = stages.get("preprocess", 0.0) + preprocess
        stages["models"] = stages.get("models", 0.0) + time.perf_counter() - t - preprocess
    return result


def write_outputs(
    ds: Dataset,
    result: AnalysisResult,
    out_dir: Path,
    stages: dict[str, float] | None = None,
    *,
    kinds: tuple[str, ...] = SR_FIRST + AFTER_SR,
    settings: Settings | None = None,
) -> list[OutputFile]:
    """Build the SR, SC (and SEG) for ``ds``, or those of ``kinds``, and write them
    atomically under ``out_dir``; the SC as ``settings`` size and compress it."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

    from node.dicom.outputs import build_outputs

    settings = settings or get_settings()
    version = algorithm_version(result.models)
    built: dict[str, Dataset] = {}
    for kind in kinds:
        with _timed(stages, kind):
            built |= build_outputs(
                ds,
                result,
                ALGORITHM_NAME,
                version,
                kinds=(kind,),
                sc_max_size=settings.sc_max_size,
                sc_transfer_syntax_uid=JPEGLSLossless
                if settings.sc_compression == "jpeg-ls"
                else ExplicitVRLittleEndian,
            )
    study_dir = out_dir / str(ds.StudyInstanceUID)
    study_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for kind, output in built.items():
        path = study_dir / f"{kind}-{output.SOPInstanceUID}.dcm"
        with _timed(stages, "write"):
            fd, tmp = tempfile.mkstemp(dir=study_dir, suffix=".part")
            os.close(fd)
            output.save_as(tmp, enforce_file_format=True)
            os.replace(tmp, path)
        files.append(
            OutputFile(
                kind=kind,
                path=path,
                sop_instance_uid=str(output.SOPInstanceUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                source_sop_instance_uid=str(ds.SOPInstanceUID),
            )
        )
    return files


def incomplete_file(ds: Dataset) -> str | None:
    """What a DICOM file read from disk lacks to be a whole instance, else None: its SOP Class
    (the dataset's or the file meta's), or, for an image storage class, its Pixel Data. pydicom
    reads a file cut short up to where it ends, without complaint; the routing would then judge
    what is left ("modality (empty)")."""
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None) or Dataset()
    sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    if not sop_class:
        return "no SOP Class UID"
    name = UID(sop_class).name
    if "Image Storage" in name and "PixelData" not in ds:
        return f"a {name} with no Pixel Data"
    return None


def _no_outputs_for(ds: Dataset) -> str | None:
    """Why no output can reference ``ds`` (a missing Study Instance UID, say), else None."""
    from node.dicom.exceptions import SourceDatasetError
    from node.dicom.source import check_source

    try:
        check_source(ds)
    except SourceDatasetError as exc:
        return str(exc)
    return None


def analyze_path(
    path: Path,
    out_dir: Path | None = None,
    heatmap: str = "gradcam",
    min_age: int = 18,
    settings: Settings | None = None,
) -> Analysis:
    """``cxr-node analyze`` for one file: no network, no broker; the node's archive (similar
    cases, the patient's course) is read where it exists, never written."""
    started = time.monotonic()
    analysis = Analysis(input=str(path), sop_instance_uid=None, eligible=False)
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        analysis.error = f"--out {out_dir} is a file, not a folder"  # before the analysis, not after
        return analysis
    try:
        if path.is_file() and path.stat().st_size == 0:
            analysis.error = f"{path} is empty"
            return analysis
        ds: Dataset | None = dcmread(path)
    except (InvalidDicomError, EOFError, ValueError, TypeError):
        ds = None  # not DICOM: a PNG or JPEG
    except OSError as exc:
        analysis.error = f"cannot read {path}: {exc.strerror or exc}"
        return analysis
    if ds is not None and (cut := incomplete_file(ds)):
        analysis.error = f"not a whole DICOM instance: {cut} (was the file cut short?)"
        return analysis
    try:
        if ds is not None:
            analysis.sop_instance_uid = str(ds.get("SOPInstanceUID", "")) or None
            decision = routing.decide(ds, min_age)
            analysis.eligible, analysis.reason = decision.eligible, decision.reason
            if not decision.eligible:
                return analysis
            if out_dir is not None and (unfit := _no_outputs_for(ds)):
                analysis.error = f"no SR/SC/SEG can be made for it: {unfit}"  # before the analysis
                return analysis
        analysis.result = analyze_image(ds if ds is not None else path, heatmap)
        analysis.eligible = True  # a picture it could not read is not called eligible
        settings = settings or get_settings()
        analysis.result.context = archive.case_context(
            ds, analysis.result, settings, use_archive=archive.readable(settings)
        )
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            if ds is not None:
                analysis.outputs = write_outputs(ds, analysis.result, out_dir, settings=settings)
            elif analysis.result.reported_class is not None:  # no heatmap for a class not reported
                analysis.extra_outputs = [_heatmap_png(analysis.result, out_dir / f"{path.stem}-heatmap.png")]
    except PermanentError as exc:
        analysis.error = str(exc)
    except Exception as exc:  # one bad input must not end a batch
        logger.exception("analysis of %s failed", path.name)
        analysis.error = f"{type(exc).__name__}: {exc}"
    finally:
        analysis.seconds = time.monotonic() - started
    return analysis


def _heatmap_png(result: AnalysisResult, path: Path) -> Path:
    """For PNG/JPEG inputs: the blended heatmap as a PNG (no DICOM context to report into)."""
    from PIL import Image

    from node.dicom.sc import blend_heatmap

    Image.fromarray(blend_heatmap(result.image, result.heatmap)).save(path)
    return path


# The worker's side ---------------------------------------------------------------------


def _set_state(sop_instance_uid: str, state: str, reason: str | None = None) -> None:
    with session_scope() as session:
        instance = session.get(Instance, sop_instance_uid)
        if instance is None:
            return
        if state == InstanceState.FAILED and instance.state == InstanceState.DONE:
            # A second delivery that failed does not undo the results the first one sent.
            logger.warning("SOP instance %s is done; a later failure leaves it so", sop_instance_uid)
            return
        instance.state, instance.reason, instance.updated_at = state, reason, utcnow()


# Events that end a started analysis (INSTANCE_INELIGIBLE: the rules changed since it was queued).
_ENDS = (EventKind.JOB_RETRIED, EventKind.JOB_SUCCEEDED, EventKind.JOB_FAILED, EventKind.INSTANCE_INELIGIBLE)


ALONE = "alone in its worker process"  # in the job.started of a suspect's last try


def lost_starts(sop_instance_uid: str) -> tuple[int, bool]:
    """How many of the instance's latest ``job.started`` events in a row have no end after them,
    and whether the latest of those ran alone in its worker process (:data:`ALONE`).

    A worker killed in the middle of a task (out of memory on this image, a crash in a
    decoder) records its start and nothing else. Celery then delivers the task again (acks
    late, rejected when the worker is lost) and the sweep re-queues it, so without a bound
    one such image would take a worker down for ever. With a threads pool (GPU hosts) every
    task in flight in the process dies with it, so a lost start alone does not name the image:
    a suspect runs once more alone (:data:`SLOTS`), and only a start lost alone fails it.
    """
    kinds = [str(k) for k in (EventKind.JOB_STARTED, *_ENDS)]
    with session_scope() as session:
        rows = session.execute(
            select(AuditEvent.kind, AuditEvent.message)
            .where(AuditEvent.sop_instance_uid == sop_instance_uid, AuditEvent.kind.in_(kinds))
            .order_by(AuditEvent.id.desc())
        )
        lost, alone = 0, False
        for kind, message in rows:
            if kind != EventKind.JOB_STARTED:
                break
            if lost == 0:  # the latest start
                alone = ALONE in (message or "")
            lost += 1
    return lost, alone


class Slots:
    """The tasks in flight in this worker process (one with prefork, several with a threads
    pool). ``hold(alone=True)`` waits until no other task runs and lets none start until it
    is done: a suspect's last try cannot take an innocent neighbour down with it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._suspects = 0  # waiting to run alone: no new task starts meanwhile
        self._alone = False

    @contextmanager
    def hold(self, alone: bool) -> Iterator[None]:
        with self._cond:
            if alone:
                self._suspects += 1
                self._cond.wait_for(lambda: not self._alone and self._running == 0)
                self._suspects -= 1
                self._alone = True
            else:
                self._cond.wait_for(lambda: not self._alone and self._suspects == 0)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                if alone:
                    self._alone = False
                self._cond.notify_all()


SLOTS = Slots()


def already_ended(sop_instance_uid: str) -> str | None:
    """``done`` or ``failed`` when the instance's analysis has ended, else None. A task delivered
    again after that (the sweep's re-queue beside a redelivery) does nothing: a failed image is
    not started again by a stray copy of its task (an image that kills its worker would then
    take down another one)."""
    with session_scope() as session:
        instance = session.get(Instance, sop_instance_uid)
        if instance is not None and instance.state in (InstanceState.DONE, InstanceState.FAILED):
            return str(instance.state)
        return None


RETRIES_SPENT = "retries spent"  # how a job.retried event that ends a task's retries begins


def give_up(sop_instance_uid: str, message: str) -> None:
    """A task's retries are spent on ``message``. The first time, the instance is left running
    (audited ``job.retried``) for the sweep to re-queue after ``stale_job_seconds``, so that a
    fault that clears (a database outage longer than the retries) costs time, not the result.
    The second time, the fault did not clear: the job fails with it (``job.failed``)."""
    with session_scope() as session:
        before = session.scalar(
            select(func.count()).where(
                AuditEvent.sop_instance_uid == sop_instance_uid,
                AuditEvent.kind == str(EventKind.JOB_RETRIED),
                AuditEvent.message.startswith(RETRIES_SPENT),
            )
        )
    if before:
        _fail(sop_instance_uid, None, f"{RETRIES_SPENT} twice: {message}", time.monotonic())
    else:
        audit.record(
            EventKind.JOB_RETRIED,
            Outcome.WARNING,
            f"{RETRIES_SPENT}; the sweep re-queues it once: {message}"[:512],
            sop_instance_uid=sop_instance_uid,
        )


def process_instance(
    sop_instance_uid: str, path: str, attempt: int = 1, settings: Settings | None = None
) -> Analysis | None:
    """Analyse one spooled instance, write its results and hand them to the outbox.

    Idempotent: output UIDs derive from the input and the models, and the
    outbox keeps one row per output and destination, so a redelivered task
    re-writes the same files and sends nothing twice.

    Raises TemporaryError (worth a retry); every other failure is audited and
    the instance marked failed.
    """
    settings = settings or get_settings()
    try:
        lost, lost_alone = lost_starts(sop_instance_uid)
    except OperationalError as exc:
        raise TemporaryError(str(exc.orig)) from exc
    if lost >= settings.max_lost_starts and lost_alone:
        _fail(
            sop_instance_uid,
            None,
            f"analysis started {lost} times in a row with no end recorded, the last time alone "
            "in its worker process: the worker was lost each time (for example killed for memory "
            "by this image), or the database could not record the end; not tried again",
            time.monotonic(),
        )
        return None
    batcher = model_batcher(settings)
    with SLOTS.hold(alone=lost >= settings.max_lost_starts):  # a suspect: one more try, alone
        if batcher is None:
            return _process(sop_instance_uid, path, attempt, settings, None, lost)
        with batcher.task():
            return _process(sop_instance_uid, path, attempt, settings, batcher, lost)


def _process(
    sop_instance_uid: str,
    path: str,
    attempt: int,
    settings: Settings,
    batcher: MicroBatcher[Any, AnalysisResult] | None,
    lost: int = 0,
) -> Analysis | None:
    """read -> start -> eligible? -> analyse -> SR out first, then SC/SEG -> archive and done.

    ``lost``: earlier starts of this instance with no end (its worker lost); job.started says
    so (a re-queued job read "attempt 1" twice), and that a suspect runs alone."""
    started = time.monotonic()
    stages: dict[str, float] = {}
    ds = _read_spooled(sop_instance_uid, path, started, stages)
    if ds is None:
        return None
    uids = instance_uids(ds, sop_instance_uid)
    try:
        with _timed(stages, "database"):
            _set_state(sop_instance_uid, InstanceState.RUNNING)
            if lost >= settings.max_lost_starts:
                note = f"; {ALONE} (lost {lost} times)"
            else:
                note = f"; re-queued: {lost} earlier start(s) lost with their worker" if lost else ""
            audit.record(EventKind.JOB_STARTED, Outcome.INFO, f"attempt {attempt}{note}", **uids)
        if not _still_eligible(ds, settings, sop_instance_uid, uids):
            return None
        t = time.monotonic()
        result = analyze_image(ds, stages=stages, batcher=batcher)
        model_ms = (time.monotonic() - t) * 1000
        with _timed(stages, "archive"):
            result.context = archive.case_context(ds, result, settings)
        outputs = _write_and_send(ds, result, settings, sop_instance_uid, uids, stages, model_ms)
        with _timed(stages, "database"):
            urgency = _record_done(ds, result, settings, sop_instance_uid, uids, started)
    except OperationalError as exc:  # database locked or briefly away
        audit.record(EventKind.JOB_RETRIED, Outcome.WARNING, f"database: {exc.orig}", **uids)
        raise TemporaryError(str(exc.orig)) from exc
    except IntegrityError as exc:
        if attempt > 1:  # not a race that one retry settles: a fault to look at, not to loop on
            _fail(sop_instance_uid, uids["study_instance_uid"], f"database constraint: {exc.orig}", started)
            return None
        # Another delivery of this task (a sweep's re-queue beside a late original) wrote the
        # same outbox or archive row first: the retry finds the instance done, or adds nothing.
        audit.record(
            EventKind.JOB_RETRIED, Outcome.WARNING, "another delivery of this task ran at once", **uids
        )
        raise TemporaryError(f"concurrent delivery: {type(exc.orig).__name__}") from exc
    except PermanentError as exc:
        _fail(sop_instance_uid, uids["study_instance_uid"], str(exc), started)
        return None
    except Exception as exc:
        logger.exception("analysis of SOP instance %s failed", sop_instance_uid)
        _fail(sop_instance_uid, uids["study_instance_uid"], f"{type(exc).__name__}: {exc}", started)
        return None
    _export_now(settings, sop_instance_uid, stages)
    if urgency is not None and urgency.urgent and settings.triage_webhook:
        _notify_urgent(settings.triage_webhook, urgency, result, uids)
    logger.info(
        "SOP instance %s done in %.2f s (%s)",
        sop_instance_uid,
        time.monotonic() - started,
        ", ".join(f"{k} {stages[k] * 1000:.0f} ms" for k in STAGES if k in stages),
    )
    return Analysis(
        input=path,
        sop_instance_uid=sop_instance_uid,
        eligible=True,
        result=result,
        outputs=outputs,
        seconds=time.monotonic() - started,
        stages=stages,
    )


def _read_spooled(
    sop_instance_uid: str, path: str, started: float, stages: dict[str, float]
) -> Dataset | None:
    """The spooled instance, or None after failing the job with the reason."""
    try:
        with _timed(stages, "read"):
            return dcmread(path)
    except FileNotFoundError:
        _fail(sop_instance_uid, None, f"spool file {path} is missing", started)
    except Exception as exc:
        _fail(sop_instance_uid, None, f"spool file unreadable: {exc}", started)
    return None


def _still_eligible(ds: Dataset, settings: Settings, sop_instance_uid: str, uids: InstanceUIDs) -> bool:
    """Routing again: the rules may have changed since the instance was queued."""
    decision = routing.decide(ds, settings.min_patient_age)
    if not decision.eligible:
        _set_state(sop_instance_uid, InstanceState.INELIGIBLE, decision.reason)
        audit.record(EventKind.INSTANCE_INELIGIBLE, Outcome.INFO, str(decision.reason), **uids)
    return decision.eligible


def _write_and_send(
    ds: Dataset,
    result: AnalysisResult,
    settings: Settings,
    sop_instance_uid: str,
    uids: InstanceUIDs,
    stages: dict[str, float],
    model_ms: float,
) -> list[OutputFile]:
    """The SR first, on its way to the PACS before the SC and SEG are built (it carries the
    triage decision); then the SC and SEG. Each is audited and queued in the outbox, so it is
    sent at most once: a redelivered task finds its outbox row (sent) and adds none."""
    outputs = write_outputs(ds, result, settings.outputs_path, stages, kinds=SR_FIRST, settings=settings)
    with _timed(stages, "database"):
        _record_outputs(outputs, result, settings, uids, model_ms)
    _export_now(settings, sop_instance_uid, stages)
    rest = write_outputs(ds, result, settings.outputs_path, stages, kinds=AFTER_SR, settings=settings)
    with _timed(stages, "database"):
        _record_outputs(rest, result, settings, uids, model_ms)
    return outputs + rest


def _record_done(
    ds: Dataset,
    result: AnalysisResult,
    settings: Settings,
    sop_instance_uid: str,
    uids: InstanceUIDs,
    started: float,
) -> Triage | None:
    """Archive the analysis, audit an urgent triage and the job's success; the triage decision."""
    with session_scope(settings.db_url) as session:
        archive.record(session, ds, result, settings)
    urgency = result.context.triage if result.context else None
    if urgency is not None and urgency.urgent:
        audit.record(EventKind.TRIAGE_URGENT, Outcome.WARNING, "; ".join(urgency.reasons), **uids)
    _set_state(sop_instance_uid, InstanceState.DONE)
    audit.record(
        EventKind.JOB_SUCCEEDED,
        Outcome.SUCCESS,
        job_summary(result),
        duration_ms=(time.monotonic() - started) * 1000,
        **uids,
    )
    return urgency


def job_summary(result: AnalysisResult) -> str:
    """The job's result in one audit line: what the SR reports, nothing the quality check withheld."""
    cls = result.reported_class
    found = f"{cls} p={result.classification[cls]:.2f}" if cls is not None else "class not assessable"
    q = result.quality
    severity = (
        f"extent {result.severity.geographic_extent:.1f}/8 opacity {result.severity.opacity:.1f}/6"
        if q.assessable
        else f"severity not assessable ({', '.join(q.reasons) or 'quality check'})"
    )
    return f"{found}; {severity}"


def _record_outputs(
    outputs: list[OutputFile],
    result: AnalysisResult,
    settings: Settings,
    uids: InstanceUIDs,
    model_ms: float,
) -> None:
    """Audit each output made and queue it for every destination."""
    for output in outputs:
        audit.record(
            EventKind.RESULT_CREATED,
            Outcome.SUCCESS,
            f"{output.kind} {output.sop_instance_uid} ({result.reported_class or 'class not assessable'})",
            study_instance_uid=uids["study_instance_uid"],
            sop_instance_uid=uids["sop_instance_uid"],
            duration_ms=model_ms,
        )
    add_to_outbox(outputs, settings)


def _export_now(settings: Settings, sop_instance_uid: str, stages: dict[str, float]) -> None:
    """Deliver this study's due outputs now rather than at the exporter's next tick;
    failures stay in the outbox. Each C-STORE's time goes to ``export_<kind>``."""
    if not settings.destinations:
        return
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    try:
        deliver_due(settings, source_sop_instance_uid=sop_instance_uid, seconds=seconds)
    except Exception:
        logger.exception("immediate export of %s failed; the outbox will retry", sop_instance_uid)
    for kind, spent in seconds.items():
        stages[f"export_{kind}"] = stages.get(f"export_{kind}", 0.0) + spent
    stages["export"] = stages.get("export", 0.0) + time.perf_counter() - started - sum(seconds.values())


def _notify_urgent(url: str, decision: Triage, result: AnalysisResult, uids: InstanceUIDs) -> None:
    """POST the urgent study to the webhook (UIDs and results, no patient data); audited."""
    payload: dict[str, Any] = {
        "event": "cxr-node.triage.urgent",
        **uids,
        "reasons": list(decision.reasons),
        "rule": decision.rule,
    }
    if result.reported_class:  # only what the SR reports: nothing the quality check withheld
        payload["predicted_class"] = result.reported_class
        payload["covid19_probability"] = round(result.classification["covid19"], 4)
    if result.quality.assessable:
        payload["geographic_extent"] = round(result.severity.geographic_extent, 2)
        payload["opacity"] = round(result.severity.opacity, 2)
    try:
        triage.notify(url, payload)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # a URL urllib cannot use
        audit.record(EventKind.TRIAGE_NOTIFIED, Outcome.FAILURE, f"webhook: {exc}", **uids)
    else:
        audit.record(EventKind.TRIAGE_NOTIFIED, Outcome.SUCCESS, "webhook", **uids)


def _fail(sop_instance_uid: str, study_instance_uid: str | None, message: str, started: float) -> None:
    logger.error("job for SOP instance %s failed: %s", sop_instance_uid, message)
    try:
        _set_state(sop_instance_uid, InstanceState.FAILED, message[:256])
    except OperationalError:
        logger.exception("could not mark %s failed", sop_instance_uid)
    audit.record(
        EventKind.JOB_FAILED,
        Outcome.FAILURE,
        message,
        study_instance_uid=study_instance_uid,
        sop_instance_uid=sop_instance_uid,
        duration_ms=(time.monotonic() - started) * 1000,
    )
