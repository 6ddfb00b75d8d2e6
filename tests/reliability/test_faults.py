"""Faults: workers, the broker, the PACS and the node itself die mid-work.

Nothing received is lost and nothing is duplicated: every instance the node
acknowledged ends as exactly one SR and one SC in Orthanc.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydicom import dcmread

from tests.e2e import NodeProcess, result_counts
from tests.helpers import free_port, storescu, wait_until, with_new_uids, write
from tests.orthanc import Orthanc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def studies(cr_chest: Path, folder: Path, count: int) -> list[Path]:
    """``count`` copies of a real CR chest, each its own study."""
    template = dcmread(cr_chest)
    folder.mkdir(parents=True, exist_ok=True)
    return [write(with_new_uids(template), folder / f"chest{i}.dcm") for i in range(count)]


def study_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def all_exported_once(orthanc: Orthanc, files: list[Path]) -> bool:
    counts = [result_counts(orthanc, study_uid(f)) for f in files]
    assert all(sr <= 1 and sc <= 1 for sr, sc in counts), counts  # never a duplicate
    return all(c == (1, 1) for c in counts)


def jobs_started(node: NodeProcess) -> int:
    """job.started rows in the node's SQLite audit table, read directly."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(node.home / "audit.sqlite", timeout=5)) as db:
        try:
            return int(
                db.execute("SELECT count(*) FROM audit_events WHERE kind = 'job.started'").fetchone()[0]
            )
        except sqlite3.OperationalError:  # not migrated yet
            return 0


def audit_count(node: NodeProcess, kind: str) -> int:
    return sum(f" {kind} " in line for line in node.audit().splitlines())


def test_worker_killed_mid_task_is_redelivered(
    orthanc: Orthanc, redis_url: str, cr_chest: Path, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path, orthanc, CXR_NODE_BROKER_URL=redis_url).start("--no-worker")
    try:
        worker = node.spawn("worker", "--concurrency", "1")
        [chest] = studies(cr_chest, tmp_path / "in", 1)
        assert storescu(node.port, chest).returncode == 0
        # Every 0.02 s in the database itself (`audit tail` takes a second, and a warm worker
        # analyses a CR in about one): the child is then stopped mid-analysis and killed.
        wait_until(lambda: jobs_started(node) >= 1, timeout=120, interval=0.02, what="job started")
        children = psutil.Process(worker.pid).children(recursive=True)
        assert children, "the prefork pool has a child process"
        for child in children:
            child.send_signal(signal.SIGSTOP)
        assert result_counts(orthanc, study_uid(chest))[1] == 0  # still mid-analysis: no SC yet
        for child in children:
            child.send_signal(signal.SIGKILL)  # the process running the task dies mid-analysis
        wait_until(
            lambda: all_exported_once(orthanc, [chest]), timeout=300, what="SR and SC after redelivery"
        )
        assert audit_count(node, "job.started") >= 2  # it ran again
        assert result_counts(orthanc, study_uid(chest)) == (1, 1)
    finally:
        node.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, callable]]:  # type: ignore[valid-type]
    """A Redis of this test's own (stopped and started by it), without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server missing: apt-get install redis-server")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_until(lambda: _redis_up(port), timeout=20, what="redis up")

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(timeout=20)

    start()
    yield f"redis://127.0.0.1:{port}/0", start, stop  # type: ignore[misc]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def _redis_up(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.exceptions.ConnectionError:
        return False


def test_redis_down_during_burst(orthanc: Orthanc, private_redis, cr_chest: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url, start_redis, stop_redis = private_redis
    node = NodeProcess(
        tmp_path,
        orthanc,
        CXR_NODE_BROKER_URL=url,
        CXR_NODE_SWEEP_INTERVAL_SECONDS="2",
        CXR_NODE_STALE_JOB_SECONDS="20",
    ).start("--no-worker")
    try:
        node.spawn("worker", "--concurrency", "1")
        files = studies(cr_chest, tmp_path / "in", 6)
        assert storescu(node.port, *files[:2]).returncode == 0
        stop_redis()  # the broker dies mid-burst: stores still succeed, queueing fails
        assert storescu(node.port, *files[2:]).returncode == 0
        assert "broker unavailable" in node.audit()
        start_redis()  # empty: whatever it held is gone
        wait_until(lambda: all_exported_once(orthanc, files), timeout=420, what="all six exported")
    finally:
        node.stop()


def test_orthanc_down_during_burst(orthanc: Orthanc, cr_chest: Path, tmp_path: Path) -> None:
    node = NodeProcess(tmp_path, orthanc).start()
    try:
        files = studies(cr_chest, tmp_path / "in", 4)
        assert storescu(node.port, files[0]).returncode == 0
        wait_until(lambda: all_exported_once(orthanc, files[:1]), timeout=300, what="first exported")
        orthanc.stop()
        assert storescu(node.port, *files[1:]).returncode == 0
        wait_until(lambda: audit_count(node, "job.succeeded") == 4, timeout=300, what="all analysed")
        assert audit_count(node, "export.failed") >= 1
        orthanc.start()
        wait_until(lambda: all_exported_once(orthanc, files), timeout=120, what="all exported")
    finally:
        node.stop()


def test_node_killed_and_restarted_mid_burst(orthanc: Orthanc, cr_chest: Path, tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path, orthanc, CXR_NODE_STALE_JOB_SECONDS="10", CXR_NODE_SWEEP_INTERVAL_SECONDS="2"
    ).start()
    files = studies(cr_chest, tmp_path / "in", 6)
    try:
        assert storescu(node.port, *files[:3]).returncode == 0
        node.kill_hard()  # SCP, worker and all, mid-analysis
        node.start()
        assert storescu(node.port, *files[3:]).returncode == 0
        wait_until(lambda: all_exported_once(orthanc, files), timeout=420, what="all six exported")
    finally:
        node.stop()
