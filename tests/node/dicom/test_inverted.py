"""A negative film (grey inverted) or one too blurred to read comes out as the SR's coded "not
assessable" with its reason, and the SC says so in a few words."""

from __future__ import annotations

from pydicom.dataset import Dataset

from models.quality import REASONS, SHORT_REASONS
from models.result import Quality
from node.dicom import codes as cxr_codes
from node.dicom.sc import header_lines
from node.dicom.sr import TRACKING_IMAGE, build_sr, image_comments
from tests.node.dicom.fakes import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    concept,
    make_result,
    measurement_groups,
    roundtrip,
)


def test_a_negative_is_not_assessable_with_its_coded_reason(cr_source: Dataset) -> None:
    result = make_result(cr_source, covid=0.97)
    result.quality = Quality(False, False, ("inverted",), REASONS["inverted"])
    image = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))[
        TRACKING_IMAGE
    ]
    coded = [(concept(c), c.ConceptCodeSequence[0]) for c in image.ContentSequence if c.ValueType == "CODE"]
    reason = ("99CXRNODE", "NAREASON")
    reasons = [(str(v.CodeValue), str(v.CodeMeaning)) for name, v in coded if name == reason]
    assert reasons == [("QCINVERTED", "Grey inverted (a negative: lungs brighter than the mediastinum)")]
    classification = (cxr_codes.CLASSIFICATION.scheme_designator, cxr_codes.CLASSIFICATION.value)
    assert classification not in [name for name, _ in coded]
    assert not [c for c in image.ContentSequence if c.ValueType == "NUM"]  # no class nor score
    assert len(SHORT_REASONS["inverted"]) <= 27  # dsrdump's cut
    assert image_comments(result)[-1] == "Grey inverted: a negative"
    assert "Grey inverted: a negative" in " ".join(header_lines(result))
    assert any(line == "Class: not assessable" for line in header_lines(result))


def test_a_blurred_film_has_its_severity_withheld_with_its_coded_reason(cr_source: Dataset) -> None:
    """Too blurred to read the severity off: the SR codes why, the SC says it in a few words, the
    class still stands (the lungs were found)."""
    result = make_result(cr_source, covid=0.97)
    result.quality = Quality(False, True, ("blurred",), REASONS["blurred"])
    image = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))[
        TRACKING_IMAGE
    ]
    coded = [(concept(c), c.ConceptCodeSequence[0]) for c in image.ContentSequence if c.ValueType == "CODE"]
    reasons = [
        (str(v.CodeValue), str(v.CodeMeaning)) for name, v in coded if name == ("99CXRNODE", "NAREASON")
    ]
    assert reasons == [("QCBLURRED", "Film too blurred for the severity to be read")]
    classification = (cxr_codes.CLASSIFICATION.scheme_designator, cxr_codes.CLASSIFICATION.value)
    assert classification in [name for name, _ in coded]
    assert len(SHORT_REASONS["blurred"]) <= 27  # dsrdump's cut
    assert image_comments(result)[-1] == "Film too blurred"
    assert any("Severity: not assessable" in line for line in header_lines(result))
