"""Load: 16 concurrent storescu associations x 25 images, every one received,
analysed and exported exactly once. Prints the ingest rate and the node's memory."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e import NodeProcess
from tests.helpers import dcmtk, make_dx, wait_until, write
from tests.orthanc import Orthanc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ASSOCIATIONS = 16
PER_ASSOCIATION = 25
TOTAL = ASSOCIATIONS * PER_ASSOCIATION


def audit_count(db: Path, kind: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM audit_events WHERE kind = ?", (kind,)).fetchone()[0])


class MemorySampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_mb = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.peak_mb = max(self.peak_mb, rss / 2**20)


def test_sixteen_associations_of_twenty_five(orthanc: Orthanc, cr_chest: Path, tmp_path: Path) -> None:
    # Each image its own study; real CR pixels at DX size (about 490 x 460, 16-bit).
    folders = []
    for a in range(ASSOCIATIONS):
        folder = tmp_path / f"modality{a}"
        folder.mkdir()
        for i in range(PER_ASSOCIATION):
            write(make_dx(cr_chest), folder / f"{i}.dcm")
        folders.append(folder)
    node = NodeProcess(tmp_path, orthanc).start()
    sampler = MemorySampler(node.procs[0].pid)
    sampler.start()
    db = node.home / "audit.sqlite"
    try:
        started = time.perf_counter()
        senders = [
            subprocess.Popen(
                [
                    dcmtk("storescu"),
                    "-aet",
                    f"MOD{a:02d}",
                    "-aec",
                    "CXRNODE",
                    "127.0.0.1",
                    str(node.port),
                    *sorted(map(str, folder.iterdir())),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for a, folder in enumerate(folders)
        ]
        errors = [s.communicate(timeout=600)[1] for s in senders]
        received_s = time.perf_counter() - started
        assert [s.returncode for s in senders] == [0] * ASSOCIATIONS, errors
        assert audit_count(db, "instance.received") == TOTAL
        wait_until(
            lambda: audit_count(db, "job.succeeded") == TOTAL,
            timeout=1800,
            interval=2,
            what="every instance analysed",
        )
        # SR, SC and (where the outline passed the quality check) SEG per instance.
        results = audit_count(db, "result.created")
        assert 2 * TOTAL <= results <= 3 * TOTAL
        wait_until(
            lambda: orthanc.get("/statistics")["CountInstances"] >= results,
            timeout=300,
            interval=2,
            what="every result exported",
        )
        done_s = time.perf_counter() - started
        # Exactly the results, once each.
        assert orthanc.get("/statistics")["CountInstances"] == results
        assert audit_count(db, "job.failed") == 0 and audit_count(db, "export.dead") == 0
    finally:
        sampler.stop.set()
        node.stop()
    print(
        f"\n{TOTAL} instances over {ASSOCIATIONS} associations: received in {received_s:.1f} s "
        f"({TOTAL / received_s:.1f} instances/s); analysed and exported in {done_s:.0f} s "
        f"({TOTAL / done_s:.2f} instances/s); node peak RSS (serve + worker) {sampler.peak_mb:.0f} MB"
    )
