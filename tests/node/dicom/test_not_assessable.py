"""When the quality check fails, the SR carries a coded "not assessable", the SC says so, triage
does not mark the study urgent on the withheld numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
from pydicom.dataset import Dataset

from models.result import CaseContext, Quality
from node.dicom import codes as cxr_codes
from node.dicom.outputs import build_outputs
from node.dicom.sc import OUTLINE_RGB, header_lines, render
from node.dicom.sr import TRACKING_IMAGE, TRACKING_LEFT, TRACKING_LEFT_OUTLINE, build_sr
from node.triage import evaluate
from tests.node.dicom.fakes import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    concept,
    make_result,
    measurement_groups,
    roundtrip,
)

NOT_ASSESSABLE = ("99CXRNODE", "NOTASSESSABLE")
RULE = "covid19 >= auto or extent >= 4"


def _coded_values(group: Dataset) -> list[tuple[str, str]]:
    return [
        (str(c.ConceptCodeSequence[0].CodingSchemeDesignator), str(c.ConceptCodeSequence[0].CodeValue))
        for c in group.ContentSequence
        if c.ValueType == "CODE"
    ]


def _comments(group: Dataset) -> list[str]:
    return [str(c.TextValue) for c in group.ContentSequence if c.ValueType == "TEXT"]


def _numbers(group: Dataset) -> list[tuple[str, str]]:
    return [concept(c) for c in group.ContentSequence if c.ValueType == "NUM"]


def _code(concept_: object) -> tuple[str, str]:
    return (concept_.scheme_designator, concept_.value)  # type: ignore[attr-defined]


SCORES = {_code(cxr_codes.GEOGRAPHIC_EXTENT), _code(cxr_codes.OPACITY), _code(cxr_codes.AREA)}
PROBABILITIES = {_code(c) for c in cxr_codes.CLASS_PROBABILITY.values()}
CLASSIFICATION = _code(cxr_codes.CLASSIFICATION)
REASON = _code(cxr_codes.NOT_ASSESSABLE_REASON)
TRIAGE = _code(cxr_codes.TRIAGE)


def _evaluations(group: Dataset) -> list[tuple[str, str]]:
    return [concept(c) for c in group.ContentSequence if c.ValueType == "CODE"]


def test_severity_not_assessable(cr_source: Dataset) -> None:
    result = make_result(cr_source)
    result.quality = Quality(False, True, ("outside_body",), "lung outline outside the body")
    groups = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))
    image = groups[TRACKING_IMAGE]
    assert NOT_ASSESSABLE in _coded_values(image)
    # what is not assessable: the severity (the class stands; found by a black-box review)
    [withheld] = [c for c in image.ContentSequence if c.ValueType == "CODE" and _code_of(c) == NOT_ASSESSABLE]
    assert concept(withheld) == ("99CXRNODE", "SEVASSESSMENT")
    assert ("99CXRNODE", "QCOUTSIDEBODY") in _coded_values(image)  # and why
    assert "Outline outside the body" in _comments(image)
    assert not SCORES & set(_numbers(image))  # no extent, opacity nor area
    assert TRACKING_LEFT not in groups and TRACKING_LEFT_OUTLINE not in groups  # nor per-lung ones
    assert CLASSIFICATION in _evaluations(image)  # the class still stands
    assert PROBABILITIES <= set(_numbers(image))
    lines = header_lines(result)
    assert any("Severity: not assessable" in line for line in lines)
    assert not any("extent 5.2" in line for line in lines)
    triage = evaluate(RULE, result, [], 0.99)  # covid19 0.91 < 0.99: only extent could fire
    assert triage is not None and not triage.urgent
    assert triage.assessed  # the class was read: routine is a decision


def test_nothing_lung_like_withholds_the_class(cr_source: Dataset) -> None:
    result = make_result(cr_source, covid=0.97)
    result.quality = Quality(False, False, ("blank",), "no image content")
    groups = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))
    image = groups[TRACKING_IMAGE]
    assert NOT_ASSESSABLE in _coded_values(image)
    [withheld] = [c for c in image.ContentSequence if c.ValueType == "CODE" and _code_of(c) == NOT_ASSESSABLE]
    assert concept(withheld) == ("99CXRNODE", "ASSESSMENT")  # nothing stands: the whole image
    reasons = [c for c in image.ContentSequence if c.ValueType == "CODE" and concept(c) == REASON]
    assert [r.ConceptCodeSequence[0].CodeMeaning for r in reasons] == ["No image content"]
    assert CLASSIFICATION not in _evaluations(image)
    assert _numbers(image) == []
    assert any(line == "Class: not assessable" for line in header_lines(result))
    triage = evaluate(RULE, result, [], 0.5)
    assert triage is not None and not triage.urgent and triage.reasons == ()
    # Nothing the rule reads was left: no decision, not "routine" (a worklist sorted on the
    # SR's priority put such films at the bottom).
    assert not triage.assessed
    result.context = CaseContext(triage=triage)
    image = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))[
        TRACKING_IMAGE
    ]
    priority = [c for c in image.ContentSequence if c.ValueType == "CODE" and concept(c) == TRIAGE]
    assert [_code_of(p) for p in priority] == [NOT_ASSESSABLE]
    assert "Triage: not assessed" in header_lines(result)


def _code_of(item: Dataset) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return (str(code.CodingSchemeDesignator), str(code.CodeValue))


def test_passed_check_reports_as_before(cr_source: Dataset) -> None:
    result = dataclasses.replace(make_result(cr_source, covid=0.97))
    groups = measurement_groups(roundtrip(build_sr(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))
    assert NOT_ASSESSABLE not in _coded_values(groups[TRACKING_IMAGE])
    assert SCORES <= set(_numbers(groups[TRACKING_IMAGE]))
    assert TRACKING_LEFT in groups
    triage = evaluate(RULE, result, [], 0.5)
    assert triage is not None and triage.urgent


def _drawn(result: object) -> tuple[int, int]:
    """(outline pixels, coloured pixels) of the SC's image area, legend boxes left out."""
    rgb = render(result, ALGORITHM_NAME, ALGORITHM_VERSION).astype(int)  # type: ignore[arg-type]
    rows = rgb.shape[0]
    middle = rgb[rows // 4 : rows * 3 // 4]
    outline = int((np.abs(middle - np.array(OUTLINE_RGB)).sum(-1) < 30).sum())
    coloured = int((middle.max(-1) - middle.min(-1) > 40).sum())
    return outline, coloured


def test_the_sc_and_seg_draw_nothing_the_check_withheld(cr_source: Dataset) -> None:
    """No outline that failed the check (as in the SR) and no SEG of it; no heatmap where no
    lungs were found (it would explain a class that is not reported)."""
    passed = make_result(cr_source)
    outline, coloured = _drawn(passed)
    assert outline > 100 and coloured > outline  # the outline and the heat
    assert "seg" in build_outputs(cr_source, passed, ALGORITHM_NAME, ALGORITHM_VERSION)

    failed = make_result(cr_source)
    failed.quality = Quality(False, True, ("shape",), "lung outline implausible in shape")
    outline, coloured = _drawn(failed)
    assert outline == 0 and coloured > 100  # the heat explains the class, which stands
    assert "seg" not in build_outputs(cr_source, failed, ALGORITHM_NAME, ALGORITHM_VERSION)

    nothing = make_result(cr_source)
    nothing.quality = Quality(False, False, ("noise",), "no radiographic structure (noise)")
    assert _drawn(nothing) == (0, 0)
    assert set(build_outputs(cr_source, nothing, ALGORITHM_NAME, ALGORITHM_VERSION)) == {"sr", "sc"}


def test_the_audit_line_reports_what_the_sr_reports(cr_source: Dataset) -> None:
    """An admin tailing the audit log sees no class the SR withholds (a turned film was logged
    'covid19 p=0.41'), and why the severity is not assessable."""
    from workers.pipeline import job_summary

    passed = make_result(cr_source, covid=0.97)
    assert job_summary(passed).startswith("covid19 p=0.97; extent ")
    turned = make_result(cr_source, covid=0.97)
    turned.quality = Quality(False, False, ("orientation", "no_lungs"), "turned")
    assert job_summary(turned) == "class not assessable; severity not assessable (orientation, no_lungs)"
    assert turned.reported_class is None
    outline = make_result(cr_source, covid=0.97)
    outline.quality = Quality(False, True, ("shape",), "shape")
    assert job_summary(outline) == "covid19 p=0.97; severity not assessable (shape)"
