"""End to end: a modality's storescu -> node -> models -> SR/SC(/SEG) -> Orthanc, same study.

Runs real processes: Orthanc (Debian), `cxr-node serve` (embedded broker and
worker, or Redis with a separate `cxr-node worker`), dcmtk's storescu.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import SecondaryCaptureImageStorage

from tests.e2e import NodeProcess, analyze_json, has_results, numeric_values, sop_classes
from tests.helpers import dciodvfy_errors, storescu, wait_until, with_new_uids, write
from tests.orthanc import Orthanc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture
def chest(cr_chest: Path, tmp_path: Path) -> Path:
    """A real CR chest PA with UIDs of its own (each test its own study)."""
    return write(with_new_uids(dcmread(cr_chest)), tmp_path / "chest.dcm")


@pytest.fixture
def embedded_node(tmp_path: Path, orthanc: Orthanc) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path, orthanc).start()
    yield node
    node.stop()


def check_results(orthanc: Orthanc, chest: Path, node: NodeProcess, tmp_path: Path) -> dict:
    source = dcmread(chest, stop_before_pixels=True)
    grouped = wait_until(
        lambda: has_results(orthanc, source.StudyInstanceUID), timeout=300, what="SR and SC in Orthanc"
    )
    sr_class = next(c for c in grouped if c.startswith("1.2.840.10008.5.1.4.1.1.88."))
    sr_item, sc_item = grouped[sr_class][0], grouped[SecondaryCaptureImageStorage][0]
    # Same study, new series, one per kind.
    assert sr_item["series_instance_uid"] != sc_item["series_instance_uid"]
    assert source.SeriesInstanceUID not in (sr_item["series_instance_uid"], sc_item["series_instance_uid"])
    sr_bytes, sc_bytes = orthanc.file(sr_item["id"]), orthanc.file(sc_item["id"])
    sr, sc = dcmread(BytesIO(sr_bytes)), dcmread(BytesIO(sc_bytes))
    for ds in (sr, sc):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    for name, data in (("sr.dcm", sr_bytes), ("sc.dcm", sc_bytes)):
        (tmp_path / name).write_bytes(data)
        assert dciodvfy_errors(tmp_path / name) == []
    # The SR says what `cxr-node analyze --json` says for the same file.
    expected = analyze_json(chest, node.env)
    numbers = numeric_values(sr)
    # Class probabilities in percent (UCUM "%"), from the JSON's four decimals.
    for value in expected["classification"].values():
        assert any(abs(n - 100 * value) < 6e-3 for n in numbers), (100 * value, numbers)
    wanted = [
        expected["severity"]["geographic_extent"],
        expected["severity"]["opacity"],
        expected["severity"]["right"]["extent"],
        expected["severity"]["right"]["opacity"],
        expected["severity"]["left"]["extent"],
        expected["severity"]["left"]["opacity"],
    ]
    for value in wanted:
        assert any(abs(n - value) < 2e-3 for n in numbers), (value, numbers)
    return {"grouped": grouped, "expected": expected, "sr": sr}


def test_embedded_node_puts_sr_and_sc_in_the_study(
    orthanc: Orthanc, embedded_node: NodeProcess, chest: Path, tmp_path: Path
) -> None:
    # The PACS has the study; the modality (or the PACS) pushes it to the node.
    to_pacs = storescu(orthanc.dicom_port, chest, aec="ORTHANC")
    assert to_pacs.returncode == 0, to_pacs.stderr
    done = storescu(embedded_node.port, chest)
    assert done.returncode == 0, done.stderr
    check_results(orthanc, chest, embedded_node, tmp_path)
    log = embedded_node.audit()
    for kind in (
        "instance.received",
        "job.queued",
        "job.started",
        "result.created",
        "job.succeeded",
        "export.sent",
    ):
        assert kind in log, kind


def test_redis_worker_end_to_end_and_retry_without_duplicates(
    orthanc: Orthanc, redis_url: str, chest: Path, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path, orthanc, CXR_NODE_BROKER_URL=redis_url)
    node.start("--no-worker")
    try:
        node.spawn("worker", "--concurrency", "1")
        done = storescu(node.port, chest)
        assert done.returncode == 0, done.stderr
        check_results(orthanc, chest, node, tmp_path)
        source = dcmread(chest, stop_before_pixels=True)
        study, sop_instance_uid = source.StudyInstanceUID, str(source.SOPInstanceUID)

        # check_results returns once the SR and SC are in; the SEG is sent after them.
        def with_seg() -> dict | None:
            grouped = sop_classes(orthanc, study)
            return grouped if SEGMENTATION_STORAGE in grouped else None

        grouped = wait_until(with_seg, timeout=120, what="the SEG in Orthanc")
        before = sorted(i["sop_instance_uid"] for i in orthanc.study_instances(study))
        # Redeliver the same task (as after a lost ack): same UIDs, nothing new in Orthanc.
        redo = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from workers.pipeline import process_instance; "
                "r = process_instance(sys.argv[1], sys.argv[2]); sys.exit(r is None)",
                sop_instance_uid,
                str(node.home / "spool" / "instances" / f"{sop_instance_uid}.dcm"),
            ],
            env=node.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert redo.returncode == 0, redo.stderr
        after = sorted(i["sop_instance_uid"] for i in orthanc.study_instances(study))
        assert after == before
        assert len(after) == sum(len(v) for v in grouped.values())
    finally:
        node.stop()


def test_orthanc_down_while_results_are_ready(
    orthanc: Orthanc, embedded_node: NodeProcess, chest: Path, tmp_path: Path
) -> None:
    orthanc.stop()
    done = storescu(embedded_node.port, chest)
    assert done.returncode == 0, done.stderr
    wait_until(lambda: "export.failed" in embedded_node.audit(), timeout=300, what="a failed export")
    orthanc.start()
    check_results(orthanc, chest, embedded_node, tmp_path)
