"""Sources with malformed headers still give valid outputs (tolerant on what we receive)."""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Callable

import pydicom
import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from node.dicom.outputs import build_outputs
from node.dicom.source import evidence_header
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result

BAD_BIRTH_DATE = "19519999"  # month 99: highdicom's DA parsing raises ValueError


def with_bad_value(source: Dataset, keyword: str, vr: str, value: str) -> Dataset:
    """The source as the worker reads it from the spool, with one malformed value."""
    ds = copy.deepcopy(source)  # Dataset.copy() is shallow: the session fixture would change
    ds[keyword] = DataElement(keyword, vr, value, validation_mode=config.IGNORE)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.fixture
def bad_source(any_source: Dataset) -> Dataset:
    return with_bad_value(any_source, "PatientBirthDate", "DA", BAD_BIRTH_DATE)


def test_invalid_birth_date_gives_valid_outputs(
    bad_source: Dataset,
    validate: Callable[[Dataset, str], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        outputs = build_outputs(bad_source, make_result(bad_source), ALGORITHM_NAME, ALGORITHM_VERSION)
    assert sorted(outputs) == ["sc", "seg", "sr"]
    for kind, ds in outputs.items():
        assert validate(ds, kind) == [], kind
        assert ds.StudyInstanceUID == bad_source.StudyInstanceUID, kind
        assert ds.PatientID == bad_source.PatientID, kind
        # Type 2 in the Patient Module (PS3.3 C.7.1.1): present and empty.
        assert "PatientBirthDate" in ds, kind
        assert not ds.PatientBirthDate, kind
    assert "PatientBirthDate" in caplog.text
    assert BAD_BIRTH_DATE not in caplog.text  # logs carry UIDs, never patient values


@pytest.mark.parametrize(
    ("keyword", "vr", "value"),
    [
        ("StudyDate", "DA", "20261340"),
        ("StudyTime", "TM", "256199"),
        ("PatientBirthTime", "TM", "10:15"),
        ("ContentDate", "DA", "2026.01.02"),
        ("AcquisitionDateTime", "DT", "20261399"),
    ],
)
def test_malformed_dates_and_times_left_out(dx_source: Dataset, keyword: str, vr: str, value: str) -> None:
    source = with_bad_value(dx_source, keyword, vr, value)
    header = evidence_header(source)
    assert not header.get(keyword)
    assert header.StudyInstanceUID == source.StudyInstanceUID
    assert header.PatientBirthDate == dx_source.PatientBirthDate  # the well-formed ones stay
    assert source[keyword].value == value  # the source itself is untouched


def test_wellformed_dates_and_times_kept(dx_source: Dataset) -> None:
    header = evidence_header(dx_source)
    for keyword in ("PatientBirthDate", "StudyDate", "StudyTime", "ContentDate", "ContentTime"):
        assert header[keyword].value == dx_source[keyword].value, keyword


@pytest.mark.parametrize(
    ("charset", "name", "declared"),
    [
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう", "ISO_IR 192"),
        (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동", "ISO_IR 192"),
        ("ISO-IR 100", "Müller^Jürgen", "ISO_IR 192"),  # a vendor's spelling, no defined term
        ("ISO_IR 100", "Müller^Jürgen", "ISO_IR 100"),
        ("ISO_IR 192", "Müller^Jürgen", "ISO_IR 192"),
    ],
)
def test_character_sets_give_outputs_with_the_same_names(
    dx_source: Dataset,
    validate: Callable[[Dataset, str], list[str]],
    charset: str | list[str],
    name: str,
    declared: str,
) -> None:
    """An empty first value of Specific Character Set is the default repertoire (PS3.3
    C.12.1.1.2; the usual Japanese and Korean header); highdicom refused it, and a vendor's
    ``ISO-IR 100``, and no SR, SC or SEG was made. Every output now declares a defined term and
    carries the name as the source's reader decodes it. Code extensions (ISO 2022 escapes) are
    written as UTF-8: copied, Orthanc 1.10 showed the outputs' names garbled."""
    ds = copy.deepcopy(dx_source)
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    other = Dataset()  # text in a sequence item too (left raw, it kept the source's bytes)
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = "P2", name.split("=")[-1], "TEXT"
    ds.OtherPatientIDsSequence = [other]
    buffer = io.BytesIO()
    with pytest.warns(UserWarning) if charset == "ISO-IR 100" else _no_warning():
        ds.save_as(buffer, enforce_file_format=True)
        source = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        expected = str(source.PatientName)
    assert expected == name
    outputs = build_outputs(source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION)
    assert sorted(outputs) == ["sc", "seg", "sr"]
    for kind, out in outputs.items():
        assert validate(out, kind) == [], kind
        written = io.BytesIO()
        out.save_as(written, enforce_file_format=True)
        back = pydicom.dcmread(io.BytesIO(written.getvalue()))
        assert str(back.PatientName) == name, kind
        assert back.OtherPatientIDsSequence[0].IssuerOfPatientID == name.split("=")[-1], kind
        assert back.SpecificCharacterSet == declared, kind
        raw = pydicom.dcmread(io.BytesIO(written.getvalue())).get_item("PatientName").value
        assert b"\x1b" not in raw, kind  # no ISO 2022 escape sequence


class _no_warning:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_malformed_age_left_out_and_a_chest_has_no_laterality(
    dx_source: Dataset, validate: Callable[[Dataset, str], list[str]]
) -> None:
    """A Patient's Age ``5Y`` (AS is nnnD/W/M/Y) copied into the outputs failed dciodvfy's VR
    check, and the SC copied the source's Laterality, which the General Series Module allows
    only for a paired body part (found by a black-box review)."""
    source = with_bad_value(dx_source, "PatientAge", "AS", "5Y")
    source.Laterality = "R"
    source.BodyPartExamined = "CHEST"
    assert "PatientAge" not in evidence_header(source)
    assert evidence_header(with_bad_value(dx_source, "PatientAge", "AS", "045Y")).PatientAge == "045Y"
    outputs = build_outputs(source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION)
    for kind, out in outputs.items():
        assert validate(out, kind) == [], kind
        assert "PatientAge" not in out, kind
    assert "Laterality" not in outputs["sc"]
