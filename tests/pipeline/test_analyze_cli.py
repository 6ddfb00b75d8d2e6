"""`cxr-node analyze` over a mixed batch: DICOM, PNG, JPEG, an ineligible view, junk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from tests.helpers import dciodvfy_errors, make_dx, write

HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "models"
KEYS = {
    "input",
    "sop_instance_uid",
    "eligible",
    "reason",
    "classification",
    "severity",
    "lungs",
    "models",
    "outputs",
    "seconds",
}


def test_analyze_json_batch(cr_chest_j2k: Path, cr_chest: Path, tmp_path: Path) -> None:
    jpeg = sorted(HELD_OUT.glob("*.jpg"))[0]
    png = tmp_path / "chest.png"
    Image.open(jpeg).save(png)
    lateral = write(make_dx(cr_chest, view="LL"), tmp_path / "lateral.dcm")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00\x01 not an image")
    cut = tmp_path / "cut.dcm"  # the header ends before Modality: was "modality (empty)", rc 0
    cut.write_bytes(cr_chest.read_bytes()[:600])
    no_study = make_dx(cr_chest)  # with --out: no output can go into its study (was a traceback)
    del no_study.StudyInstanceUID
    no_study = write(no_study, tmp_path / "no-study.dcm")
    out = tmp_path / "out"
    inputs = [cr_chest_j2k, png, jpeg, lateral, junk, cut, no_study]
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "analyze", "--json", "--out", str(out), *map(str, inputs)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1  # the junk, the cut and the study-less file failed; the rest went on
    assert "Traceback" not in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in rows] == [str(p) for p in inputs]
    assert all(KEYS <= set(r) for r in rows)
    dicom, png_row, jpeg_row, lateral_row, junk_row, cut_row, no_study_row = rows
    for row in (dicom, png_row, jpeg_row):
        assert row["eligible"] and row.get("error") is None
        assert abs(sum(row["classification"].values()) - 1.0) < 1e-3
        assert 0 <= row["severity"]["geographic_extent"] <= 8 and 0 <= row["severity"]["opacity"] <= 6
    assert dicom["sop_instance_uid"] == str(dcmread(cr_chest_j2k, stop_before_pixels=True).SOPInstanceUID)
    kinds = sorted(Path(p).name.split("-")[0] for p in dicom["outputs"])
    assert kinds == ["sc", "seg", "sr"]
    for path in dicom["outputs"]:
        assert dciodvfy_errors(Path(path)) == []
    assert png_row["outputs"] and Path(png_row["outputs"][0]).suffix == ".png"
    assert lateral_row["eligible"] is False and "not frontal" in lateral_row["reason"]
    assert lateral_row["classification"] is None
    assert junk_row["error"]
    assert "cut short" in cut_row["error"] and cut_row["classification"] is None
    assert "StudyInstanceUID" in no_study_row["error"] and no_study_row["classification"] is None


@pytest.mark.parametrize(("kind", "reason"), [("blank", "blank"), ("ramp", "atypical")])
def test_nonsense_is_not_a_finding(tmp_path: Path, kind: str, reason: str) -> None:
    """A blank grey image, a grey ramp (read "COVID-19 0.48, extent 6.3, URGENT" before the
    chest-likeness): "not assessable" for class and severity, never urgent, and no number the SR
    withholds in the JSON either (issue 15)."""
    image = tmp_path / f"{kind}.png"
    if kind == "blank":
        Image.new("L", (512, 512), 128).save(image)
    else:
        Image.fromarray(np.tile(np.linspace(0, 255, 512), (512, 1)).astype(np.uint8)).save(image)
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "analyze", "--out", str(tmp_path / "out"), str(image)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "class not assessable" in done.stdout and "severity not assessable" in done.stdout
    assert "URGENT" not in done.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "node.cli", "analyze", "--json", "--out", str(tmp_path / "out2"), str(image)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    row = json.loads(as_json.stdout.splitlines()[0])
    assert row["quality"]["assessable"] is False and row["quality"]["lungs_found"] is False
    assert row["quality"]["reasons"][-1] == reason
    assert row["predicted_class"] is None and row["classification"] is None
    assert row["severity"] is None and row["lungs"] is None
    assert row["outputs"] == []  # no heatmap PNG explaining a class that is not reported
    assert not (row.get("triage") or {}).get("urgent")


def test_the_text_line_names_the_class_in_words(tmp_path: Path) -> None:
    """The line a person reads says "COVID-19", "Other disease", as the SC does, not the JSON's
    identifiers."""
    from node.dicom.codes import CLASS_LABELS

    jpeg = sorted(HELD_OUT.glob("*.jpg"))[0]
    runs = [
        subprocess.run(
            [sys.executable, "-m", "node.cli", "analyze", *flag, "--out", str(tmp_path / name), str(jpeg)],
            capture_output=True,
            text=True,
            timeout=600,
        ).stdout
        for flag, name in (([], "text"), (["--json"], "json"))
    ]
    row = json.loads(runs[1].splitlines()[0])
    label = CLASS_LABELS[row["predicted_class"]]
    assert runs[0].startswith(f"{jpeg}: {label} ({row['classification'][row['predicted_class']]:.2f}); ")
    assert "/8, opacity " in runs[0]


def test_a_whole_instance_is_not_called_incomplete(cr_chest: Path) -> None:
    """The check behind "was the file cut short?" passes whole files, a non-image (an SR has no
    Pixel Data) and fails a header with no SOP Class or an image with its pixels cut off."""
    from pydicom.dataset import Dataset
    from pydicom.uid import BasicTextSRStorage

    from workers.pipeline import incomplete_file

    whole = dcmread(cr_chest)
    assert incomplete_file(whole) is None
    report = Dataset()
    report.SOPClassUID = BasicTextSRStorage
    assert incomplete_file(report) is None
    assert incomplete_file(Dataset()) == "no SOP Class UID"
    del whole.PixelData
    assert "no Pixel Data" in (incomplete_file(whole) or "")


def test_unreadable_inputs_say_why_before_any_analysis(tmp_path: Path, cr_chest: Path) -> None:
    """An empty file was read as 'File is missing DICOM File Meta ... use force=True' (pydicom's
    hint to a programmer), a file that is no DICOM and no picture was called eligible beside its
    error, and an --out that is a file failed after the models ran, with a traceback."""
    from workers.pipeline import analyze_path

    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    got = analyze_path(empty)
    assert got.error == f"{empty} is empty" and not got.eligible
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00\x01 not an image")
    got = analyze_path(junk)
    assert got.error and "not a DICOM file" in got.error and "force" not in got.error
    assert not got.eligible and got.result is None
    a_file = tmp_path / "out"
    a_file.write_text("")
    got = analyze_path(cr_chest, out_dir=a_file)
    assert got.error == f"--out {a_file} is a file, not a folder" and got.result is None
