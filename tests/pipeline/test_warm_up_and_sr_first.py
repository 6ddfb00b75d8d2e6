"""Worker children hold their models before their first task; the SR leaves before the SC is built.

A real ``cxr-node serve`` with its embedded worker (two prefork children)
sends its results to a small C-STORE SCP in this process, which notes, as
each instance arrives, whether the node has already written the study's SC.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless
from pynetdicom import AE, evt

from models.registry import INFERENCE_ROLES
from tests.e2e import NodeProcess
from tests.helpers import CLI, free_port, storescu, wait_until, with_new_uids, write
from workers.readiness import readiness

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SR = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
SC = "1.2.840.10008.5.1.4.1.1.7"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
_DONE = re.compile(r"SOP instance (\S+) done in [\d.]+ s \((.*)\)")


@dataclass
class Received:
    sop_class: str
    association: int
    sc_written: bool  # the node's SC file of the study existed when this arrived


@dataclass
class FakePacs:
    outputs: Path
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)

    def start(self) -> FakePacs:
        ae = AE(ae_title="PACS")
        for sop_class in (SR, SC, SEG):
            ae.add_supported_context(
                sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless]
            )
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return self

    def _store(self, event: evt.Event) -> int:
        ds = event.dataset
        study = self.outputs / str(ds.StudyInstanceUID)
        written = study.is_dir() and any(study.glob("sc-*.dcm"))
        self.received.append(Received(str(ds.SOPClassUID), id(event.assoc), written))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _get(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None  # not listening yet


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The node, its first answer from /ready, and the fake PACS."""
    tmp = tmp_path_factory.mktemp("warm")
    metrics = free_port()
    pacs = FakePacs(tmp / "node" / "outputs").start()
    node = NodeProcess(
        tmp,
        SimpleNamespace(dicom_port=pacs.port),  # type: ignore[arg-type]
        CXR_NODE_DESTINATIONS=f"PACS@127.0.0.1:{pacs.port}",
        CXR_NODE_METRICS_PORT=str(metrics),
        CXR_NODE_WORKER_CONCURRENCY="2",
    ).start()
    first = wait_until(lambda: _get(f"http://127.0.0.1:{metrics}/ready"), timeout=60, interval=0.05)
    try:
        yield SimpleNamespace(node=node, pacs=pacs, metrics=metrics, first=first, tmp=tmp)
    finally:
        node.stop()
        pacs.stop()


def test_ready_only_once_every_child_holds_its_models(started: SimpleNamespace) -> None:
    node, metrics = started.node, started.metrics
    # Loading and running the models takes seconds: the node answered before they were in.
    status, body = started.first
    assert status == 503 and body["ready"] is False and body["workers"]["expected"] == 2
    wait_until(
        lambda: (_get(f"http://127.0.0.1:{metrics}/ready") or (0,))[0] == 200, timeout=300, what="/ready 200"
    )
    _, health = _get(f"http://127.0.0.1:{metrics}/health")  # type: ignore[misc]
    assert health["ready"] is True and health["workers"] == {"expected": 2, "ready": 2}
    found = readiness(node.home)
    [worker] = found.workers
    assert found.ready and worker.expected == worker.ready == 2
    # The files name the worker's two live prefork children, each warmed up once.
    worker_pid = int(worker.name.rsplit("-", 1)[1])
    children = {p.pid for p in psutil.Process(worker_pid).children()}
    folder = node.home / "workers" / worker.name
    files = {int(p.name): p for p in folder.iterdir() if p.name.isdigit()}
    assert set(files) == children and len(children) == 2
    for path in files.values():
        record = json.loads(path.read_text())
        assert sorted(record["models"]) == sorted(INFERENCE_ROLES)
        assert record["seconds"] > 0
    wait_until(  # serve looks every half second
        lambda: "ready: 2 of 2 worker processes hold their models" in node.log.read_text(),
        timeout=30,
        interval=0.1,
        what="serve's ready line",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    env.update(CXR_NODE_HOME=str(node.home), COLUMNS="200")
    done = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "workers ready: 2 of 2 worker processes hold their models" in done.stdout


def test_sr_sent_before_the_sc_is_built(started: SimpleNamespace, cr_chest: Path) -> None:
    node, pacs = started.node, started.pacs
    wait_until(lambda: readiness(node.home).ready, timeout=300, what="workers ready")
    warm_up = min(
        json.loads(p.read_text())["seconds"] for p in (node.home / "workers").glob("*/*") if p.name.isdigit()
    )
    chest = write(with_new_uids(dcmread(cr_chest)), started.tmp / "chest.dcm")
    assert storescu(node.port, chest).returncode == 0
    wait_until(lambda: len(pacs.received) >= 3, timeout=300, what="SR, SC and SEG at the PACS")
    assert [r.sop_class for r in pacs.received] == [SR, SC, SEG]
    sr, sc, seg = pacs.received
    assert not sr.sc_written  # on its way before the SC existed
    assert sr.association != sc.association == seg.association
    # The first study on a warm child: its model stage is not a model load. The worker logs
    # its line after the outputs are sent, so it may come after the PACS has them all.
    wait_until(lambda: _DONE.search(node.log.read_text()), timeout=60, what="the job's timing line")
    [stages] = [m.group(2) for m in _DONE.finditer(node.log.read_text())]
    models_ms = float(re.search(r"models (\d+) ms", stages).group(1))  # type: ignore[union-attr]
    assert models_ms / 1000 < warm_up
    # Each output's build is timed; the SR's C-STORE too (the SC and SEG may be sent by the
    # node's exporter thread before the worker gets to them: the same outbox rows, sent once).
    for kind in ("export_sr", "sr ", "sc ", "seg "):
        assert kind in stages


def test_jpeg_ls_sc_sent_decompressed_to_a_pacs_without_jpeg_ls(tmp_path: Path, cr_chest: Path) -> None:
    """CXR_NODE_SC_COMPRESSION=jpeg-ls: offered compressed and uncompressed; a PACS that takes only
    the latter gets the same pixels uncompressed."""
    from highdicom.sc import SCImage

    from node.scu import send_datasets
    from node.settings import Destination

    source = dcmread(cr_chest)
    pixels = source.pixel_array[:64, :48].astype("uint8")
    sc = SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=source.StudyInstanceUID,
        series_instance_uid=f"{source.SeriesInstanceUID}.1",
        sop_instance_uid=f"{source.SeriesInstanceUID}.2",
        series_number=1,
        instance_number=1,
        manufacturer="tests",
        patient_orientation=("L", "F"),
        transfer_syntax_uid=JPEGLSLossless,
    )
    got: list = []
    ae = AE(ae_title="PLAIN")
    ae.add_supported_context(SC, [ExplicitVRLittleEndian])
    port = free_port()

    def store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        got.append((event.context.transfer_syntax, ds.SOPInstanceUID, ds.pixel_array))
        return 0x0000

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        [result] = send_datasets([sc], Destination.parse(f"PLAIN@127.0.0.1:{port}"))
    finally:
        server.shutdown()
    assert result.ok and result.seconds > 0
    [(syntax, uid, received)] = got
    assert syntax == ExplicitVRLittleEndian
    assert uid == sc.SOPInstanceUID  # the same instance: the outbox's exactly-once holds
    assert (received == pixels).all()
