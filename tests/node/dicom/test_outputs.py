"""What all outputs share: validity, round trip, study, series and UIDs."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.outputs import build_outputs
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, roundtrip

KINDS = ("sr", "sc", "seg")

# Patient and General Study attributes that every output must carry unchanged.
STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyID",
)


def test_all_kinds_built(outputs: dict[str, Dataset]) -> None:
    assert sorted(outputs) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_dciodvfy_reports_no_errors(
    outputs: dict[str, Dataset], kind: str, validate: Callable[[Dataset, str], list[str]]
) -> None:
    assert validate(outputs[kind], kind) == []


@pytest.mark.parametrize("kind", KINDS)
def test_roundtrip_through_pydicom(outputs: dict[str, Dataset], kind: str) -> None:
    ds = outputs[kind]
    back = roundtrip(ds)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.SOPClassUID == ds.SOPClassUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    if "PixelData" in ds:
        assert (back.pixel_array == ds.pixel_array).all()
    else:
        assert len(back.ContentSequence) == len(ds.ContentSequence)


@pytest.mark.parametrize("kind", KINDS)
def test_study_level_attributes_copied(any_source: Dataset, outputs: dict[str, Dataset], kind: str) -> None:
    back = roundtrip(outputs[kind])
    for keyword in STUDY_KEYWORDS:
        assert str(back.get(keyword, "")) == str(any_source.get(keyword, "")), keyword
    assert back.StudyInstanceUID == any_source.StudyInstanceUID


def test_each_kind_in_its_own_new_series(any_source: Dataset, outputs: dict[str, Dataset]) -> None:
    series = {kind: ds.SeriesInstanceUID for kind, ds in outputs.items()}
    assert len(set(series.values())) == len(KINDS)
    assert any_source.SeriesInstanceUID not in series.values()
    assert len({ds.SeriesNumber for ds in outputs.values()}) == len(KINDS)
    instances = {ds.SOPInstanceUID for ds in outputs.values()}
    assert len(instances) == len(KINDS)
    assert any_source.SOPInstanceUID not in instances


def test_rebuild_gives_same_uids(
    any_source: Dataset, result: AnalysisResult, outputs: dict[str, Dataset]
) -> None:
    again = build_outputs(any_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)
    for kind in KINDS:
        assert again[kind].SOPInstanceUID == outputs[kind].SOPInstanceUID, kind
        assert again[kind].SeriesInstanceUID == outputs[kind].SeriesInstanceUID, kind


def test_new_model_version_gives_new_uids(dx_source: Dataset) -> None:
    from tests.node.dicom.fakes import make_result

    result = make_result(dx_source)
    old = build_outputs(dx_source, result, ALGORITHM_NAME, "1.0.0")
    new = build_outputs(dx_source, result, ALGORITHM_NAME, "1.0.1")
    for kind in KINDS:
        assert old[kind].SOPInstanceUID != new[kind].SOPInstanceUID, kind
        assert old[kind].SeriesInstanceUID != new[kind].SeriesInstanceUID, kind


def test_include_seg_false(dx_source: Dataset) -> None:
    from tests.node.dicom.fakes import make_result

    built = build_outputs(
        dx_source, make_result(dx_source), ALGORITHM_NAME, ALGORITHM_VERSION, include_seg=False
    )
    assert sorted(built) == ["sc", "sr"]


def test_contributing_equipment_names_algorithm(outputs: dict[str, Dataset]) -> None:
    for kind, ds in outputs.items():
        items = [
            item
            for item in ds.ContributingEquipmentSequence
            if item.get("ManufacturerModelName") == ALGORITHM_NAME
        ]
        assert len(items) == 1, kind
        assert items[0].Manufacturer == "CXR Node"
        assert items[0].SoftwareVersions == ALGORITHM_VERSION
        assert items[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_validator_sees_errors(dx_source: Dataset, validate: Callable[[Dataset, str], list[str]]) -> None:
    # Guards the check above: a broken SR must be reported.
    from tests.node.dicom.fakes import make_result

    sr = build_outputs(
        dx_source, make_result(dx_source), ALGORITHM_NAME, ALGORITHM_VERSION, include_seg=False
    )["sr"]
    del sr.VerificationFlag
    assert any("VerificationFlag" in line or "Verification Flag" in line for line in validate(sr, "broken"))


def test_minimal_source_gives_valid_outputs(validate: Callable[[Dataset, str], list[str]]) -> None:
    # Type 2 attributes empty or absent, no orientation, no body part: the
    # outputs must still be valid and keep what there is.
    from tests.node.dicom.fakes import make_dx, make_result

    source = make_dx(rows=128, columns=96)
    for keyword in ("PatientOrientation", "BodyPartExamined", "AccessionNumber", "StudyID"):
        del source[keyword]
    source.PatientBirthDate = ""
    source.PatientSex = ""
    built = build_outputs(source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION)
    assert sorted(built) == sorted(KINDS)
    for kind, ds in built.items():
        assert validate(ds, f"minimal-{kind}") == [], kind
        assert ds.PatientID == source.PatientID
        assert ds.StudyInstanceUID == source.StudyInstanceUID


def test_outputs_do_not_share_elements_with_source(dx_source: Dataset) -> None:
    from tests.node.dicom.fakes import make_result

    built = build_outputs(dx_source, make_result(dx_source), ALGORITHM_NAME, ALGORITHM_VERSION)
    name = str(dx_source.PatientName)
    for ds in built.values():
        ds.PatientName = "Changed^Here"
    assert str(dx_source.PatientName) == name


def test_two_images_of_one_study_share_each_series(dx_source: Dataset) -> None:
    from pydicom.uid import generate_uid

    from tests.node.dicom.fakes import make_result

    lateral = copy.deepcopy(dx_source)
    lateral.SOPInstanceUID = generate_uid()
    first = build_outputs(dx_source, make_result(dx_source), ALGORITHM_NAME, ALGORITHM_VERSION)
    second = build_outputs(lateral, make_result(lateral), ALGORITHM_NAME, ALGORITHM_VERSION)
    for kind in KINDS:
        assert first[kind].SeriesInstanceUID == second[kind].SeriesInstanceUID, kind
        assert first[kind].SOPInstanceUID != second[kind].SOPInstanceUID, kind


def test_zero_pixel_spacing_source_gives_valid_outputs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """pydicom-data's CR as it is (Pixel Spacing 0\\0), spacing unknown to the models:
    no output may copy the zeros (dciodvfy: 'Value is zero ... Pixel Spacing')."""
    import pydicom

    from node.dicom.outputs import build_outputs
    from tests.helpers import dciodvfy_errors, pydicom_data_file
    from tests.node.dicom.fakes import make_result

    source = pydicom.dcmread(pydicom_data_file("RG1_UNCR.dcm"))
    assert [float(v) for v in source.PixelSpacing] == [0.0, 0.0]
    built = build_outputs(source, make_result(source, spacing=False), ALGORITHM_NAME, ALGORITHM_VERSION)
    assert set(built) == {"sr", "sc", "seg"}
    for kind, ds in built.items():
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], kind
