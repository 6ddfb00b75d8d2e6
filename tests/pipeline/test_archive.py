"""The node's archive: similar earlier cases, a patient's course, triage (issue 11).

One patient of the shared data with images on days 1, 6, 11 and 13 of her
illness (cxr-collection patient 205) and one other patient go through the
worker's pipeline with the shipped models; then through Orthanc.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage
from sqlalchemy import func, select

from node import settings as node_settings
from node.db.engine import session_scope, upgrade
from node.db.tables import ArchivedAnalysis, AuditEvent
from node.dicom.trend import EXTENT_RGB, trend_points
from tests.e2e import NodeProcess, has_results
from tests.helpers import dciodvfy_errors, dx_from_picture, storescu, wait_until, write
from tests.orthanc import Orthanc
from workers.pipeline import Analysis, process_instance

COURSE = "covid-19-pneumonia-progression-and-regression-day{}.jpg"
OTHER = "cb706009.jpg"  # another patient (cxr-collection 250)


def _study(shared: Path, name: str, patient_id: str, date: str, tmp: Path) -> Path:
    picture = shared / "cxr-collection" / "images" / name
    return write(
        dx_from_picture(picture, patient_id=patient_id, study_date=date), tmp / f"{patient_id}-{date}.dcm"
    )


def _process(path: Path) -> Analysis:
    ds = dcmread(path, stop_before_pixels=True)
    analysis = process_instance(str(ds.SOPInstanceUID), str(path))
    assert analysis is not None and analysis.result is not None
    return analysis


def _groups(sr: Dataset) -> dict[str, Dataset]:
    """TID 1410 groups of an SR by tracking identifier."""
    out = {}
    for container in sr.ContentSequence:
        for group in container.get("ContentSequence", []):
            for item in group.get("ContentSequence", []):
                if item.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier":
                    out[item.TextValue] = group
    return out


def _referenced(group: Dataset, source: str) -> set[str]:
    """Images a group's items reference, other than its region's ``source`` image."""
    found = set()
    for item in group.get("ContentSequence", []):
        for child in item.get("ContentSequence", []):
            for ref in child.get("ReferencedSOPSequence", []):
                found.add(str(ref.ReferencedSOPInstanceUID))
    return found - {source}


def _num(group: Dataset, meaning: str) -> float:
    for item in group.ContentSequence:
        if item.ValueType == "NUM" and item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            return float(item.MeasuredValueSequence[0].NumericValue)
    raise KeyError(meaning)


def _sr(analysis: Analysis) -> Dataset:
    return dcmread(next(o.path for o in analysis.outputs if o.kind == "sr"))


def test_course_similar_cases_and_triage(node_config, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upgrade()
    other = _process(_study(shared_data, OTHER, "P250", "20200301", tmp_path))
    course = [
        _process(_study(shared_data, COURSE.format(d), "P205", f"202003{d:02d}", tmp_path))
        for d in (1, 6, 11)
    ]
    first, previous, now = course

    # The first study of a patient has no course; the other patient's image is a similar case.
    ctx = first.as_json()
    assert ctx["longitudinal"] is None
    assert [c["sop_instance_uid"] for c in ctx["similar_cases"]] == [other.sop_instance_uid]

    report = now.as_json()
    assert report["longitudinal"]["earlier_studies"] == 2
    since = {c["since"]: c for c in report["longitudinal"]["changes"]}
    assert since["previous"]["study_date"] == "2020-03-06" and since["previous"]["days"] == 5
    assert since["first"]["study_date"] == "2020-03-01" and since["first"]["days"] == 10
    for name, earlier in (("previous", previous), ("first", first)):
        for key in ("geographic_extent", "opacity"):
            expected = report["severity"][key] - earlier.as_json()["severity"][key]
            assert since[name][f"{key}_change"] == pytest.approx(expected, abs=2e-3)
    # Never the patient's own images among the similar cases (unless asked).
    own = {a.sop_instance_uid for a in course}
    similar = [c["sop_instance_uid"] for c in report["similar_cases"]]
    assert similar == [other.sop_instance_uid] and not own & set(similar)
    assert 0.0 <= report["similar_cases"][0]["distance"] <= 2.0

    # Triage: the configured rule, its decision, an audit event per urgent study.
    assert re.fullmatch(r"covid19 >= 0\.\d+ or extent >= 4", report["triage"]["rule"])
    urgent = [a for a in [other, *course] if a.as_json()["triage"]["urgent"]]
    with session_scope() as session:
        events = session.scalar(select(func.count()).where(AuditEvent.kind == "triage.urgent"))
        rows = session.scalars(select(ArchivedAnalysis)).all()
    assert events == len(urgent)
    assert len(rows) == 4
    assert {r.sop_instance_uid for r in rows if r.urgent} == {a.sop_instance_uid for a in urgent}
    # The archive keeps a keyed hash, not the Patient ID.
    assert all(r.patient_key and "P205" not in r.patient_key for r in rows)
    assert b"P205" not in b"".join(p.read_bytes() for p in node_config.home.glob("audit.sqlite*"))

    # The SR: changes since the previous and the first study, similar cases, triage.
    sr, now_uid = _sr(now), str(now.sop_instance_uid)
    groups = _groups(sr)
    change = groups["change since previous study"]
    assert _referenced(change, now_uid) == {previous.sop_instance_uid}
    assert _num(change, "Time since the earlier study") == 5
    assert _num(change, "Change in geographic extent score") == pytest.approx(
        since["previous"]["geographic_extent_change"], abs=2e-3
    )
    assert _referenced(groups["change since first study"], now_uid) == {first.sop_instance_uid}
    assert _referenced(groups["similar case 1"], now_uid) == {other.sop_instance_uid}
    # The earlier images' groups have those images as their region (OHIF draws nothing of
    # them on this image); the triage decision is in the whole image's group.
    for name, earlier in (("change since previous study", previous), ("similar case 1", other)):
        [region] = [item for item in groups[name].ContentSequence if item.ValueType == "SCOORD"]
        assert (
            region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            == earlier.sop_instance_uid
        )
        shape = dcmread(earlier.input, stop_before_pixels=True)
        assert [float(v) for v in region.GraphicData][4:6] == [shape.Columns, shape.Rows], name
    triage = [
        item.ConceptCodeSequence[0].CodeMeaning
        for item in groups["whole image"].ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Triage priority"
    ]
    assert triage == ["Urgent" if report["triage"]["urgent"] else "Routine"]
    pertinent = {
        str(s.ReferencedSOPInstanceUID)
        for study in sr.PertinentOtherEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for s in series.ReferencedSOPSequence
    }
    assert pertinent == {previous.sop_instance_uid, first.sop_instance_uid, other.sop_instance_uid}
    for output in now.outputs:
        assert dciodvfy_errors(output.path) == [], output.kind

    # The SC: the course plotted top right (extent in its colour), not on the first study's SC.
    def trend_pixels(analysis: Analysis) -> int:
        sc = dcmread(next(o.path for o in analysis.outputs if o.kind == "sc")).pixel_array
        corner = sc[: sc.shape[0] // 4, -sc.shape[1] // 3 :].astype(int)
        return int((np.abs(corner - np.array(EXTENT_RGB)).sum(-1) < 30).sum())

    assert trend_pixels(now) > 50 and trend_pixels(first) < trend_pixels(now) / 5

    # Asked to, the patient's own earlier images are similar cases too. (Day 13's own film fails
    # the outline check, and a film whose scores are withheld searches nothing: day 11's again.)
    node_settings.configure(similar_same_patient=True)
    later = _process(_study(shared_data, COURSE.format(11), "P205", "20200313", tmp_path))
    assert own & {c["sop_instance_uid"] for c in later.as_json()["similar_cases"]}


def test_withheld_scores_are_no_baseline_and_no_similar_case(
    node_config, shared_data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A film whose scores the quality check withheld (here a blank grey film filed as the
    patient's day-6 study) shows no change, no trend point and no similar cases, and is kept
    out of the archive: the next study's change is measured from the last scored one, and
    nobody is shown it as a similar case."""
    from PIL import Image

    upgrade()
    first = _process(_study(shared_data, COURSE.format(1), "P205", "20200301", tmp_path))
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((600, 500), 128, np.uint8)).save(grey)
    blank = _process(
        write(dx_from_picture(grey, patient_id="P205", study_date="20200306"), tmp_path / "blank.dcm")
    )
    later = _process(_study(shared_data, COURSE.format(11), "P205", "20200311", tmp_path))

    withheld = blank.as_json()
    assert not withheld["quality"]["assessable"]
    assert withheld["longitudinal"]["earlier_studies"] == 1  # the course is listed ...
    assert withheld["longitudinal"]["changes"] == []  # ... but nothing is measured against it
    assert withheld["similar_cases"] == []
    assert not withheld["triage"]["urgent"]
    assert "change since previous study" not in _groups(_sr(blank))
    assert blank.result is not None and trend_points(blank.result, date(2020, 3, 6)) == []  # no "(now)"

    report = later.as_json()
    assert [c["sop_instance_uid"] for c in report["longitudinal"]["changes"]] == [first.sop_instance_uid]
    assert blank.sop_instance_uid not in {c["sop_instance_uid"] for c in report["similar_cases"]}
    with session_scope() as session:
        archived = set(session.scalars(select(ArchivedAnalysis.sop_instance_uid)))
    assert archived == {first.sop_instance_uid, later.sop_instance_uid}


def test_analyze_reads_the_archive_without_writing_it(node_config, shared_data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    upgrade()
    earlier = _process(_study(shared_data, COURSE.format(1), "P205", "20200301", tmp_path))
    later = _study(shared_data, COURSE.format(6), "P205", "20200306", tmp_path)
    env = {"CXR_NODE_HOME": str(node_config.home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "analyze", "--json", str(later)],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["longitudinal"]["changes"][0]["sop_instance_uid"] == earlier.sop_instance_uid
    assert report["longitudinal"]["changes"][0]["days"] == 5
    assert report["triage"]["urgent"] in (True, False)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(ArchivedAnalysis)) == 1


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        type(self).received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/urgent", _Hook.received
    server.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_through_orthanc(orthanc: Orthanc, shared_data: Path, tmp_path: Path, webhook) -> None:  # type: ignore[no-untyped-def]
    url, received = webhook
    node = NodeProcess(
        tmp_path, orthanc, CXR_NODE_TRIAGE_RULE="extent >= 0", CXR_NODE_TRIAGE_WEBHOOK=url
    ).start()
    try:
        studies = [
            _study(shared_data, OTHER, "P250", "20200301", tmp_path),
            _study(shared_data, COURSE.format(1), "P205", "20200301", tmp_path),
            _study(shared_data, COURSE.format(6), "P205", "20200306", tmp_path),
        ]
        headers = [dcmread(p, stop_before_pixels=True) for p in studies]
        for path, ds in zip(studies, headers, strict=True):  # one at a time: each sees the last
            storescu(node.port, path)
            wait_until(lambda ds=ds: has_results(orthanc, ds.StudyInstanceUID), timeout=300, what="results")
        grouped = has_results(orthanc, headers[2].StudyInstanceUID)
        assert grouped is not None
        sr_class = next(c for c in grouped if c.startswith("1.2.840.10008.5.1.4.1.1.88."))
        sr = dcmread(BytesIO(orthanc.file(grouped[sr_class][0]["id"])))
        groups = _groups(sr)
        assert _referenced(groups["change since previous study"], headers[2].SOPInstanceUID) == {
            headers[1].SOPInstanceUID
        }
        assert _num(groups["change since previous study"], "Time since the earlier study") == 5
        assert _referenced(groups["similar case 1"], headers[2].SOPInstanceUID) == {headers[0].SOPInstanceUID}
        assert SecondaryCaptureImageStorage in grouped
        # Every study is urgent under this rule: one POST each, UIDs and no patient data.
        wait_until(lambda: len(received) == 3, timeout=60, what="three webhook calls")
        assert {r["sop_instance_uid"] for r in received} == {str(ds.SOPInstanceUID) for ds in headers}
        assert all(r["event"] == "cxr-node.triage.urgent" for r in received)
        assert "P205" not in json.dumps(received) and "Test^Course" not in json.dumps(received)
        audit = node.audit()
        assert audit.count("triage.urgent") == 3 and audit.count("triage.notified") == 3
    finally:
        node.stop()
