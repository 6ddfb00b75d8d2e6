"""1,000 short associations (echo and store) in a row: the node's memory stays flat.

pynetdicom users have reported leaks per association; this measures the
resident set size of a real `cxr-node serve` process from outside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, Verification  # type: ignore[attr-defined]

from tests.helpers import free_port, make_dx, new_uid, wait_until

pytestmark = pytest.mark.slow

ASSOCIATIONS = 1000
WARM_UP = 200
# Bound on growth after warm-up: SQLite page cache and Python's allocator settle
# within a few MB; a per-association leak of even 30 kB would exceed it.
MAX_GROWTH_MB = 24.0


def test_thousand_short_associations_keep_memory_flat(tmp_path: Path, cr_chest: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    env.update(CXR_NODE_HOME=str(tmp_path / "node"), CXR_NODE_PORT=str(port), CXR_NODE_MIN_FREE_BYTES="0")
    log = tmp_path / "node.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "serve", "--no-worker"], env=env, stdout=out, stderr=out
        )
    try:
        wait_until(lambda: "listening" in log.read_text(), timeout=60, what="node listening")
        node = psutil.Process(proc.pid)
        template = make_dx(cr_chest)
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        ae.add_requested_context(DigitalXRayImageStorageForPresentation)
        rss: dict[int, float] = {}
        for i in range(ASSOCIATIONS):
            assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
            assert assoc.is_established, f"association {i} failed"
            if i % 2:
                ds = template.copy()
                ds.SOPInstanceUID = new_uid()
                ds.file_meta = template.file_meta.copy()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                assert assoc.send_c_store(ds).Status == 0
            else:
                assert assoc.send_c_echo().Status == 0
            assoc.release()
            if i + 1 in (WARM_UP, ASSOCIATIONS):
                rss[i + 1] = node.memory_info().rss / 2**20
        growth = rss[ASSOCIATIONS] - rss[WARM_UP]
        print(
            f"\nRSS after {WARM_UP}: {rss[WARM_UP]:.1f} MB, after {ASSOCIATIONS}: "
            f"{rss[ASSOCIATIONS]:.1f} MB, growth {growth:+.1f} MB"
        )
        assert growth < MAX_GROWTH_MB, rss
        assert len(list((tmp_path / "node" / "spool" / "instances").iterdir())) == ASSOCIATIONS // 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
