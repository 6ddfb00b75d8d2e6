"""Every worker child loads its models before it takes a task, and says so.

A prefork child that loaded the networks on its first study made that study
take seconds instead of a fraction of one (8 s against 2 s measured), once
per child after every start. So each child warms up in Celery's
``worker_process_init`` (the solo pool sends it too; the threads pool warms
up once in ``worker_init``): it loads every model, runs them once over a
synthetic image (torch's first forward and backward pass set up kernels and
memory) and builds its SR, SC and SEG in memory (highdicom's first SR takes
a second more than the next; fonts, colour map). Celery's prefork
pool writes tasks only to children that have finished their initialiser (a
child announces itself with WORKER_UP after it), so no task waits behind a
warm-up; ``worker_proc_alive_timeout`` is raised to let the warm-up finish.

Readiness is a folder per worker under ``<home>/workers``:
``<host>-<pid>/expected`` holds how many children the worker runs, and each
child writes ``<host>-<pid>/<child pid>`` once warm. ``cxr-node serve`` and
``cxr-node status`` read it (:func:`readiness`); folders of workers that are
gone on this host are removed, files of children that died are ignored.

Before any of that, a worker waits for the database to be at this version's
Alembic head (:func:`wait_for_schema`): a worker of the new version started
beside the node that migrates (compose, Kubernetes) would otherwise analyse
against the old schema and fail its jobs for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FOLDER = "workers"
EXPECTED = "expected"
# Rows, columns of the synthetic image: a film's size, so that the first real study finds the
# process's memory already grown to a full-size image's working set (the networks take 256 px).
WARM_UP_SIZE = (2048, 1664)
WARM_UP_SC_SIZE = 1024  # smaller than the image: the SC's downscaling runs too
PROC_ALIVE_TIMEOUT = 300.0  # seconds a prefork child may take to warm up before Celery kills it
SCHEMA_POLL_SECONDS = 2.0  # how often a waiting worker reads the database's revision
SCHEMA_LOG_SECONDS = 60.0  # and how often it says why it waits


@dataclass(frozen=True)
class WorkerReadiness:
    """One worker (a ``cxr-node worker`` process) and its children."""

    name: str  # "<host>-<pid>"
    expected: int
    ready: int

    @property
    def is_ready(self) -> bool:
        return self.ready >= self.expected


@dataclass(frozen=True)
class Readiness:
    workers: tuple[WorkerReadiness, ...]

    @property
    def expected_children(self) -> int:
        return sum(w.expected for w in self.workers)

    @property
    def ready_children(self) -> int:
        return sum(min(w.ready, w.expected) for w in self.workers)

    @property
    def ready(self) -> bool:
        """At least one worker, and every child of every worker warm."""
        return bool(self.workers) and all(w.is_ready for w in self.workers)

    def worker(self, pid: int) -> WorkerReadiness | None:
        """The worker of this host with process id ``pid``."""
        name = worker_name(pid)
        return next((w for w in self.workers if w.name == name), None)


def worker_name(pid: int) -> str:
    return f"{socket.gethostname()}-{pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def readiness(home: Path) -> Readiness:
    """What the worker folders under ``home`` say; stale folders of this host are removed."""
    root = Path(home) / FOLDER
    host = socket.gethostname()
    found = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        name_host, _, pid_text = folder.name.rpartition("-")
        local = name_host == host and pid_text.isdigit()
        if local and not _alive(int(pid_text)):
            shutil.rmtree(folder, ignore_errors=True)  # a worker killed outright left it
            continue
        try:
            expected = int((folder / EXPECTED).read_text())
        except (OSError, ValueError):
            continue  # being written
        children = [p for p in folder.iterdir() if p.name.isdigit()]
        if local:
            children = [p for p in children if _alive(int(p.name))]
        found.append(WorkerReadiness(folder.name, expected, len(children)))
    return Readiness(tuple(found))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def announce_worker(home: Path, pid: int, children: int) -> Path:
    """The worker process: expect ``children`` warm children (clears an earlier worker's files)."""
    folder = Path(home) / FOLDER / worker_name(pid)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _write(folder / EXPECTED, f"{children}\n")
    return folder


def announce_child(folder: Path, pid: int, seconds: float, models: list[str]) -> None:
    """A child: warm, with these models loaded after ``seconds`` of warm-up."""
    _write(folder / str(pid), json.dumps({"seconds": round(seconds, 3), "models": models}) + "\n")


def withdraw_child(folder: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        (folder / str(pid)).unlink()


def _synthetic_source(rows: int, columns: int) -> Any:
    """The header of a made-up DX (no patient) for building outputs once, never stored or sent."""
    from pydicom.dataset import Dataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, generate_uid

    ds = Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in range(3))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Warm^Up", "WARM-UP", "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns, ds.ImagerPixelSpacing = rows, columns, [0.4, 0.4]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def warm_up() -> float:
    """Load every model, run the whole analysis once on a synthetic image and build its SR,
    SC and SEG in memory (the first SR alone takes a second longer than the next); seconds taken."""
    import numpy as np

    from models.inference import get_analyzer
    from models.preprocessing import LoadedImage
    from node.dicom.outputs import build_outputs

    started = time.perf_counter()
    try:
        import faiss  # noqa: F401  (the archive's similar-case index, imported on first use)
    except ImportError:
        pass
    analyzer = get_analyzer()
    analyzer.load_all()
    rows, columns = WARM_UP_SIZE
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float32)
    # Two dark ovals (lungs) in a bright body: something the networks segment.
    lungs = ((((x - columns * 0.3) / (columns * 0.17)) ** 2 + ((y - rows * 0.5) / (rows * 0.3)) ** 2) < 1) | (
        (((x - columns * 0.7) / (columns * 0.17)) ** 2 + ((y - rows * 0.5) / (rows * 0.3)) ** 2) < 1
    )
    pixels = np.where(lungs, 800.0, 3000.0).astype(np.float32)
    result = analyzer.analyze(LoadedImage(pixels=pixels, pixel_spacing_mm=(0.4, 0.4), source="warm-up"))
    build_outputs(
        _synthetic_source(rows, columns), result, "CXR Node", "warm-up", sc_max_size=WARM_UP_SC_SIZE
    )
    # The task's own modules (imported on its first run) and the database: engine, connection,
    # the first compiled query.
    from workers.pipeline import already_ended

    try:
        already_ended("2.25.0")
    except Exception as exc:  # the task will report a database that is away
        logger.warning("warm-up could not reach the database: %s", exc)
    return time.perf_counter() - started


def wait_for_schema(
    url: str | None = None,
    poll_seconds: float = SCHEMA_POLL_SECONDS,
    log_seconds: float = SCHEMA_LOG_SECONDS,
) -> None:
    """Return once the database is at this version's Alembic head; until then log why,
    once every ``log_seconds``, and read it again every ``poll_seconds``.

    A database behind the head (or one that cannot be reached) is waited for: the node
    that migrates it (``serve`` on start, or ``cxr-node db upgrade``) often starts beside
    the workers. A newer one raises ConfigurationError: waiting does not make it older.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from node.db.engine import schema_state
    from node.exceptions import ConfigurationError

    logged_at: float | None = None
    while True:
        try:
            state = schema_state(url)
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc  # the driver's words, without the SQL
            why = f"cannot read the database's schema ({' '.join(str(cause).split())[:200]})"
        else:
            if state.is_current:
                if logged_at is not None:
                    logger.info("%s: starting", state.summary)
                return
            if state.is_newer:
                raise ConfigurationError(state.refusal("start"))
            why = f"{state.summary}: {state.remedy}"
        if logged_at is None or time.monotonic() - logged_at >= log_seconds:
            logger.warning("%s; waiting", why)
            logged_at = time.monotonic()
        time.sleep(poll_seconds)


def install(home: Path, children: int, pool: str) -> None:
    """Connect the warm-up and the readiness files to this worker's Celery signals.

    Called by ``cxr-node worker`` in the worker process before Celery starts.
    """
    from celery import signals

    folder = announce_worker(home, os.getpid(), children if pool == "prefork" else 1)
    main_pid = os.getpid()

    def warm(**_: Any) -> None:
        pid = os.getpid()
        try:
            seconds = warm_up()
        except Exception:  # the first task will fail the same way, audited; the child stays up
            logger.exception("worker process %d could not load its models", pid)
            return
        from models.inference import get_analyzer

        logger.info("worker process %d ready: models loaded and run once in %.1f s", pid, seconds)
        announce_child(folder, pid, seconds, sorted(get_analyzer().loaded_roles))

    def child_gone(pid: int | None = None, **_: Any) -> None:
        withdraw_child(folder, pid or os.getpid())

    def worker_gone(**_: Any) -> None:
        if os.getpid() == main_pid:
            shutil.rmtree(folder, ignore_errors=True)

    if pool == "threads":
        signals.worker_init.connect(warm, weak=False)
    else:
        signals.worker_process_init.connect(warm, weak=False)
        signals.worker_process_shutdown.connect(child_gone, weak=False)
    signals.worker_shutdown.connect(worker_gone, weak=False)
