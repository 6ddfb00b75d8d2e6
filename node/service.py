"""The running node: database, spool sweep, SCP, embedded worker, periodic sweep.

``cxr-node serve`` is a thin wrapper around :class:`Node`; tests start one in
a thread-free way with ``Node.start()`` / ``Node.stop()``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from node.db import audit
from node.db.audit import EventKind, Outcome
from node.db.engine import upgrade
from node.export import Exporter
from node.ingest import Ingest
from node.metrics import MetricsServer
from node.scp import StorageSCP
from node.settings import Settings, get_settings, settings_env

logger = logging.getLogger(__name__)


class Node:
    """One node process: owns the SCP, the sweeper thread and the worker child."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.ingest = Ingest(self.settings)
        self.scp = StorageSCP(self.settings, self.ingest)
        self.worker: subprocess.Popen[bytes] | None = None
        self.exporter = Exporter(self.settings)
        self.metrics: MetricsServer | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.address: tuple[str, int] | None = None
        self._running_fd: int | None = None  # the locked running file (_previous_run_unstopped)

    def start(self) -> tuple[str, int]:
        """Migrate the database to this version's head, then start; a database newer than
        this version is refused (ConfigurationError) before anything is written to it."""
        state = upgrade(self.settings.db_url, refusing="start")
        notes = [f"AE {self.settings.ae_title}"]
        if not state.current:
            notes.append(f"database schema created at {state.head}")
        elif not state.is_current:
            notes.append(f"database schema {', '.join(state.current)} upgraded to {state.head}")
        unclean = self._previous_run_unstopped()
        if unclean:
            notes.append("the previous run of this home ended without a stop (killed or crashed)")
        audit.record(EventKind.NODE_STARTED, Outcome.WARNING if unclean else Outcome.INFO, "; ".join(notes))
        try:
            return self._start()
        except BaseException as exc:  # the audit says the node is down again, and why
            self.stop(f"did not start: {type(exc).__name__}: {exc}")
            raise

    @property
    def running_file(self) -> Path:
        """Written on start, removed on stop: left behind, the node was killed or crashed."""
        return self.settings.home / "node.running"

    def _previous_run_unstopped(self) -> bool:
        """Whether an earlier node of this home ended without a stop, and mark this one running.

        The running file is locked (``flock``) while a node runs; the kernel lets the lock go
        when the process dies however it dies. So a file that is there and not locked was left
        by a node that never stopped, whatever PID it names (in a container every run is PID
        1). A file another live node holds is neither this node's nor a sign of a crash."""
        self.settings.home.mkdir(parents=True, exist_ok=True)
        left = self.running_file.exists()
        fd = os.open(self.running_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._running_fd = fd
        return left

    def _start(self) -> tuple[str, int]:
        self.ingest.spool.ensure()
        stop_orphan_worker(self.worker_pid_file)  # before the sweep queues anything it could take
        # before the SCP listens; the embedded worker's running jobs died with the last node
        requeued = self.ingest.sweep(at_start=True, running_lost=self.settings.embedded_worker)
        if requeued:
            logger.info("start-up sweep re-queued %d instance(s)", requeued)
        self.address = self.scp.start()
        self.exporter.start()
        if self.settings.metrics_port:
            worker_up = self._worker_up if self.settings.embedded_worker else None
            self.metrics = MetricsServer(self.settings, workers=self.workers_status, worker_up=worker_up)
            try:
                self.metrics.start()
            except OSError as exc:  # DICOM goes on; the operator sees why there are no metrics
                logger.error("no metrics: cannot listen on port %d: %s", self.settings.metrics_port, exc)
                self.metrics = None
        if self.settings.embedded_worker:
            self.worker = self._start_worker()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="spool-sweeper", daemon=True)
        self._sweeper.start()
        return self.address

    def _start_worker(self) -> subprocess.Popen[bytes]:
        """A child ``cxr-node worker`` on the same broker, settings passed by environment."""
        env = {**os.environ, **settings_env(self.settings)}
        cmd = [
            sys.executable,
            "-m",
            "node.cli",
            "worker",
            "--concurrency",
            str(self.settings.worker_concurrency),
            "--parent-pid",
            str(os.getpid()),
        ]
        logger.info("starting embedded worker: %s", " ".join(cmd[1:]))
        # Started from this thread: PR_SET_PDEATHSIG fires when the creating thread exits.
        worker = subprocess.Popen(cmd, env=env)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.worker_pid_file.write_text(f"{worker.pid}\n")
        return worker

    def _worker_up(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def workers_status(self) -> dict[str, int | bool] | None:
        """The embedded worker's children: how many are expected and how many hold their
        models (``workers.readiness``); None without an embedded worker."""
        if not self.settings.embedded_worker:
            return None
        worker = self.worker
        if worker is None:  # not started yet
            return {"expected": self.settings.worker_concurrency, "ready": 0, "all_ready": False}
        from workers.readiness import readiness

        found = readiness(self.settings.home).worker(worker.pid)
        expected = self.settings.worker_concurrency if found is None else found.expected
        ready = 0 if found is None or worker.poll() is not None else min(found.ready, expected)
        return {"expected": expected, "ready": ready, "all_ready": ready >= expected}

    @property
    def worker_pid_file(self) -> Path:
        return self.settings.home / "worker.pid"

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_seconds):
            try:
                self.ingest.sweep()
            except Exception:
                logger.exception("periodic spool sweep failed")

    def stop(self, failure: str | None = None) -> None:
        """Stop what runs; ``failure``: why the node did not start (audited as a failed stop)."""
        self._stop.set()
        self.scp.stop()
        self.exporter.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.worker is not None and self.worker.poll() is None:
            self.worker.terminate()  # Celery's warm shutdown: finish the current task
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        if self.worker is not None:
            self.worker_pid_file.unlink(missing_ok=True)
        if self._running_fd is not None:  # only the node that holds it says it stopped
            self.running_file.unlink(missing_ok=True)
            os.close(self._running_fd)
            self._running_fd = None
        if failure is None:
            audit.record(EventKind.NODE_STOPPED, Outcome.INFO, f"AE {self.settings.ae_title}")
        else:
            audit.record(EventKind.NODE_STOPPED, Outcome.FAILURE, f"AE {self.settings.ae_title} {failure}")

    def run_forever(self) -> None:
        """Serve until SIGINT/SIGTERM."""

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: shutting down", signum)
            self._stop.set()

        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        self.start()
        announced = False
        backoff = RestartBackoff()
        started_at, restart_at = time.monotonic(), None
        try:
            while not self._stop.wait(0.5 if not announced else 1.0):
                if self.worker is not None and self.worker.poll() is not None:
                    now = time.monotonic()
                    if restart_at is None:  # just exited
                        delay = backoff.next_delay(now - started_at)
                        logger.error(
                            "embedded worker exited (%s); restarting in %.0f s", self.worker.returncode, delay
                        )
                        restart_at = now + delay
                    if now >= restart_at:
                        self.worker = self._start_worker()
                        started_at, restart_at, announced = now, None, False
                status = self.workers_status()
                if not announced and status is not None and status["all_ready"]:
                    logger.info(
                        "ready: %d of %d worker processes hold their models",
                        status["ready"],
                        status["expected"],
                    )
                    announced = True
        finally:
            self.stop()


class RestartBackoff:
    """Seconds to wait before starting the embedded worker again: none after a run of at least
    ``stable`` seconds, then 1, 3, 7, ... up to ``cap`` for each exit in a row that came sooner.
    A worker that cannot start (a database newer than its code, a broken setting) was started
    again twice a second, for good, each time logging its failure."""

    def __init__(self, stable: float = 60.0, cap: float = 60.0) -> None:
        self.stable, self.cap, self.quick = stable, cap, 0

    def next_delay(self, ran_for: float) -> float:
        self.quick = self.quick + 1 if ran_for < self.stable else 0
        return min(self.cap, 2.0**self.quick - 1)


def _proc_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_orphan_worker(pid_file: Path, grace_seconds: float = 30.0) -> bool:
    """Stop an embedded worker left by an earlier node of this home, if one still runs.

    The pid file names the worker; it is ours only if its command line is an
    embedded worker's and the node it names as parent is gone (a live node's
    worker is never touched). Returns True if an orphan was stopped.
    """
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return False
    if "worker" not in argv or "--parent-pid" not in argv or not _proc_alive(pid):
        return False
    parent = int(argv[argv.index("--parent-pid") + 1])
    if parent != os.getpid() and _proc_alive(parent):
        return False
    logger.warning("stopping orphan embedded worker %d of a node that is gone", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while _proc_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _proc_alive(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
