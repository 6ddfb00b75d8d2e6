"""TID 1500 Comprehensive SR: content read back by walking the tree."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset

from models.registry import ROLES, model_id
from models.result import CLASSES, AnalysisResult, CaseContext, PriorCase, Triage
from node.dicom.exceptions import ResultMismatchError, SourceDatasetError
from node.dicom.sr import (
    IMAGE_ANCHOR_ROW,
    LABEL_BOX,
    TRACKING_IMAGE,
    TRACKING_LEFT,
    TRACKING_LEFT_OUTLINE,
    TRACKING_RIGHT,
    TRACKING_RIGHT_OUTLINE,
    build_sr,
    earlier_image_region,
    image_comments,
    label_point,
)
from node.dicom.uids import derive_device_uid
from tests.helpers import dcmtk, run
from tests.node.dicom.fakes import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    concept,
    content_items,
    make_result,
    measurement_groups,
    numeric,
    roundtrip,
)

CLASS_CODES = {
    "normal": ("SCT", "17621005"),
    "other_disease": ("99CXRNODE", "OTHERDISEASE"),
    "pneumonia": ("SCT", "233604007"),
    "covid19": ("SCT", "840539006"),
}
GEO = ("99CXRNODE", "GEOEXTENT")
OPACITY = ("99CXRNODE", "OPACITY")
AREA = ("SCT", "42798000")
CLASS_PROBABILITY = {
    "normal": ("99CXRNODE", "PNORMAL"),
    "other_disease": ("99CXRNODE", "POTHERDISEASE"),
    "pneumonia": ("99CXRNODE", "PPNEUMONIA"),
    "covid19": ("99CXRNODE", "PCOVID19"),
}


@pytest.fixture(scope="module")
def sr(outputs: dict[str, Dataset]) -> Dataset:
    return roundtrip(outputs["sr"])


def test_header(sr: Dataset) -> None:
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.Modality == "SR"
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    # TID 1500 root: Imaging Measurement Report.
    assert (sr.ConceptNameCodeSequence[0].CodeValue, sr.ContentTemplateSequence[0].TemplateIdentifier) == (
        "126000",
        "1500",
    )
    schemes = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert "99CXRNODE" in schemes


def test_source_image_referenced(any_source: Dataset, sr: Dataset) -> None:
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == any_source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == any_source.SOPInstanceUID
    for identifier, group in measurement_groups(sr).items():
        # Directly (TID 1501) or under the region's SCOORD (TID 1410).
        images = [item for item in content_items(group) if item.ValueType == "IMAGE"]
        assert len(images) == 1, identifier
        ref = images[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == any_source.SOPInstanceUID, identifier
        assert ref.ReferencedSOPClassUID == any_source.SOPClassUID, identifier


def test_every_group_has_tracking_uid_and_algorithm(sr: Dataset) -> None:
    groups = measurement_groups(sr)
    expected = {TRACKING_IMAGE, TRACKING_RIGHT, TRACKING_LEFT, TRACKING_RIGHT_OUTLINE, TRACKING_LEFT_OUTLINE}
    assert set(groups) == expected
    uids = set()
    for identifier, group in groups.items():
        children = {concept(item): item for item in group.ContentSequence}
        uids.add(children[("DCM", "112040")].UID)  # Tracking Unique Identifier
        # TID 4019 Algorithm Identification.
        assert children[("DCM", "111001")].TextValue == ALGORITHM_NAME, identifier
        assert children[("DCM", "111003")].TextValue == ALGORITHM_VERSION, identifier
    assert len(uids) == len(groups)


def test_device_observer_names_algorithm(sr: Dataset) -> None:
    items = {concept(item): item for item in content_items(sr) if item.ValueType in ("TEXT", "UIDREF")}
    assert items[("DCM", "121012")].UID == derive_device_uid(ALGORITHM_NAME, ALGORITHM_VERSION)
    assert items[("DCM", "121013")].TextValue == ALGORITHM_NAME  # Device Observer Name
    assert items[("DCM", "121014")].TextValue == "CXR Node"  # Device Observer Manufacturer


def test_class_probabilities(sr: Dataset, result: AnalysisResult) -> None:
    """One whole-image group: each class's probability in percent, named after the class."""
    group = measurement_groups(sr)[TRACKING_IMAGE]
    for name in CLASSES:
        value, unit = numeric(group, *CLASS_PROBABILITY[name])
        assert value == pytest.approx(100 * result.classification[name], abs=5e-4), name
        assert unit == "%"
    # The most probable class first: OHIF shows a group's first five numbers.
    first = next(item for item in group.ContentSequence if item.ValueType == "NUM")
    assert concept(first) == CLASS_PROBABILITY[result.predicted_class]


def test_predicted_class(sr: Dataset, result: AnalysisResult) -> None:
    group = measurement_groups(sr)[TRACKING_IMAGE]
    [evaluation] = [item for item in group.ContentSequence if concept(item) == ("SCT", "278201002")]
    code = evaluation.ConceptCodeSequence[0]
    assert result.predicted_class == "covid19"
    assert (code.CodingSchemeDesignator, code.CodeValue) == ("SCT", "840539006")


def _sites(item: Dataset) -> list[tuple[str, str | None]]:
    """(finding site, laterality) code values of a NUM's TID 300 finding sites."""
    out = []
    for site in item.get("ContentSequence", []):
        if concept(site) == ("SCT", "363698007"):
            modifiers = [m for m in site.get("ContentSequence", []) if concept(m) == ("SCT", "272741003")]
            laterality = modifiers[0].ConceptCodeSequence[0].CodeValue if modifiers else None
            out.append((site.ConceptCodeSequence[0].CodeValue, laterality))
    return out


def test_severity_scores_and_areas(sr: Dataset, result: AnalysisResult) -> None:
    groups = measurement_groups(sr)
    severity = result.severity
    right_area = result.lung_area_cm2(result.right_lung)
    left_area = result.lung_area_cm2(result.left_lung)
    assert right_area is not None and left_area is not None
    expected = {
        TRACKING_IMAGE: (severity.geographic_extent, severity.opacity, right_area + left_area, None),
        TRACKING_RIGHT: (severity.right.extent, severity.right.opacity, right_area, "24028007"),
        TRACKING_LEFT: (severity.left.extent, severity.left.opacity, left_area, "7771000"),
    }
    for identifier, (extent, opacity, area, laterality) in expected.items():
        group = groups[identifier]
        # Rounded to thousandths (DECIMALS).
        assert numeric(group, *GEO) == (pytest.approx(extent, abs=5e-4), "{score}"), identifier
        assert numeric(group, *OPACITY) == (pytest.approx(opacity, abs=5e-4), "{score}"), identifier
        assert numeric(group, *AREA) == (pytest.approx(area, abs=5e-4), "cm2"), identifier
        # The lung is the finding site of each measurement (TID 300), not of the group:
        # OHIF writes a group's finding site as its bare code ("363698007: Lung").
        for item in group.ContentSequence:
            if item.ValueType == "NUM" and concept(item) in (GEO, OPACITY, AREA):
                assert _sites(item) == [("39607008", laterality)], identifier
        assert not [item for item in group.ContentSequence if concept(item) == ("SCT", "363698007")]


def test_no_area_without_pixel_spacing(dx_source: Dataset) -> None:
    sr = build_sr(dx_source, make_result(dx_source, spacing=False), ALGORITHM_NAME, ALGORITHM_VERSION)
    group = measurement_groups(sr)[TRACKING_RIGHT]
    assert not [item for item in group.ContentSequence if concept(item) == AREA]
    assert numeric(group, *GEO)[0] == pytest.approx(3.0)


def test_missing_class_is_an_error(dx_source: Dataset) -> None:
    result = make_result(dx_source)
    del result.classification["pneumonia"]
    with pytest.raises(ResultMismatchError, match="pneumonia"):
        build_sr(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)


def test_non_projection_source_is_an_error(dx_source: Dataset) -> None:
    ct = copy.deepcopy(dx_source)
    ct.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    with pytest.raises(SourceDatasetError, match="SOPClassUID"):
        build_sr(ct, make_result(dx_source), ALGORITHM_NAME, ALGORITHM_VERSION)


def _parameters(group: Dataset) -> list[str]:
    return [str(item.TextValue) for item in group.ContentSequence if concept(item) == ("DCM", "111002")]


def test_models_listed_as_algorithm_parameters(sr: Dataset, result: AnalysisResult) -> None:
    for identifier, group in measurement_groups(sr).items():
        # TID 4019 row 3: one TEXT item per model, name@version first, role after.
        expected = [f"{model} ({role})" for role, model in sorted(result.models.items())]
        assert _parameters(group) == expected, identifier


def test_shipped_model_versions_in_full(
    dx_source: Dataset, tmp_path: Path, validate: Callable[[Dataset, str], list[str]]
) -> None:
    """Regression: dsrdump showed 'classification=cxr-resnet4@...'.

    The TEXT items (UT) always held the whole value; dsrdump shortens items
    over 30 characters to 27 and '...' unless given +Pl. With the model
    first, every shipped name@version reads in full even there.
    """
    shipped = {role: model_id(role) for role in ROLES}
    result = make_result(dx_source)
    result.models = shipped
    ds = build_sr(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)
    assert validate(ds, "sr") == []
    back = roundtrip(ds)
    for identifier, group in measurement_groups(back).items():
        parameters = _parameters(group)
        assert len(parameters) == len(ROLES), identifier
        for role, model in shipped.items():
            assert f"{model} ({role})" in parameters, (identifier, role)
    path = tmp_path / "sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    shown = run([dcmtk("dsrdump"), str(path)]).stdout
    for model in shipped.values():
        assert shown.count(f'"Algorithm Parameters")="{model}') == len(measurement_groups(back)), model


def test_lung_groups_outline_the_lungs(sr: Dataset, result: AnalysisResult) -> None:
    groups = measurement_groups(sr)
    for identifier, mask in (
        (TRACKING_RIGHT_OUTLINE, result.right_lung),
        (TRACKING_LEFT_OUTLINE, result.left_lung),
    ):
        [scoord] = [item for item in groups[identifier].ContentSequence if item.ValueType == "SCOORD"]
        assert concept(scoord) == ("DCM", "111030")  # Image Region
        assert scoord.GraphicType == "POLYLINE"
        xy = np.asarray(scoord.GraphicData, dtype=float).reshape(-1, 2)
        assert (xy[0] == xy[-1]).all(), "closed outline expected"
        rows, columns = mask.shape
        assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= columns
        assert xy[:, 1].min() >= 0 and xy[:, 1].max() <= rows
        # Shoelace area of the outline is the mask's area, give or take the border.
        x, y = xy[:, 0], xy[:, 1]
        area = abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2
        assert area == pytest.approx(mask.sum(), rel=0.03), identifier
        # Its centroid is on the right side of the image for that lung.
        assert (x.mean() < columns / 2) == (identifier == TRACKING_RIGHT_OUTLINE)


def _coordinates(group: Dataset) -> list[Dataset]:
    """The SCOORDs OHIF 3.13 places a group by: the group's region (TID 1410), else those
    under its measurements (TID 1501; ``_processNonGeometricallyDefinedMeasurement``)."""
    region = [item for item in group.ContentSequence if item.ValueType == "SCOORD"]
    if region:
        return region
    return [
        child
        for item in group.ContentSequence
        if item.ValueType == "NUM"
        for child in item.get("ContentSequence", [])
        if child.ValueType == "SCOORD"
    ]


def ohif_lines(group: Dataset) -> list[str]:
    """The text OHIF 3.13.2 writes for a group (extensions/cornerstone-dicom-sr, read in its
    bundle): for a TID 1410 group each NUM; for a TID 1501 group each Comment, then each NUM
    without children or with a SCOORD; ``"<label>: <value>"``, a NUM's value with its unit's
    code value, at most five lines."""
    items = list(group.ContentSequence)
    tid1410 = any(item.ValueType == "SCOORD" for item in items)
    labels = [] if tid1410 else [(str(i.TextValue), "") for i in items if concept(i) == ("DCM", "121106")]
    for item in items:
        if item.ValueType != "NUM":
            continue
        children = item.get("ContentSequence", [])
        if not tid1410 and children and not any(child.ValueType == "SCOORD" for child in children):
            continue  # OHIF skips it ("contains no SCOORD or SCOORD3D entry")
        measured = item.MeasuredValueSequence[0]
        unit = measured.MeasurementUnitsCodeSequence[0].CodeValue
        labels.append(
            (item.ConceptNameCodeSequence[0].CodeMeaning, f"{float(measured.NumericValue):.2f} {unit}")
        )
    return [f"{label}: {value}" for label, value in labels[:5]]


def test_every_group_has_coordinates_on_the_source(sr: Dataset, any_source: Dataset) -> None:
    """OHIF stops placing an SR's measurements at the first group without coordinates."""
    for identifier, group in measurement_groups(sr).items():
        scoords = _coordinates(group)
        assert scoords, identifier
        for scoord in scoords:
            [source] = scoord.ContentSequence
            assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == any_source.SOPInstanceUID
        if identifier == TRACKING_IMAGE:  # its text from the left edge, below the lungs
            [scoord] = scoords
            assert concept(scoord) == ("99CXRNODE", "LABELANCHOR")
            x, y = (float(v) for v in scoord.GraphicData)
            assert x == 0.5 and y == pytest.approx(IMAGE_ANCHOR_ROW * any_source.Rows, abs=1), identifier


def test_what_ohif_writes_reads_as_words(sr: Dataset, result: AnalysisResult) -> None:
    """Scores in words, the class and the probabilities; no raw unit code or bare SNOMED code."""
    groups = measurement_groups(sr)
    severity = result.severity
    assert ohif_lines(groups[TRACKING_RIGHT])[:2] == [
        f"Extent {severity.right.extent:.1f} of 4: ",
        f"Opacity {severity.right.opacity:.1f} of 3: ",
    ]
    assert ohif_lines(groups[TRACKING_RIGHT])[2].startswith("Area: ")
    assert ohif_lines(groups[TRACKING_LEFT])[0] == f"Extent {severity.left.extent:.1f} of 4: "
    image = ohif_lines(groups[TRACKING_IMAGE])
    assert image[0] == "COVID-19 most likely: "
    assert image[1] == f"COVID-19 probability: {100 * result.classification['covid19']:.2f} %"
    assert len(image) == 5
    for identifier in (TRACKING_RIGHT, TRACKING_LEFT, TRACKING_IMAGE):
        for line in ohif_lines(groups[identifier]):
            assert "{" not in line and not line.endswith(" 1"), line
            assert not re.search(r"\d{6,}", line), line


def test_lung_scores_at_a_point_whose_text_fits_in_the_lung(sr: Dataset, result: AnalysisResult) -> None:
    """OHIF writes a POINT's numbers below right of it: the point and that box in the lung."""
    groups = measurement_groups(sr)
    for identifier, mask in ((TRACKING_RIGHT, result.right_lung), (TRACKING_LEFT, result.left_lung)):
        [scoord] = _coordinates(groups[identifier])
        assert scoord.GraphicType == "POINT", identifier
        x, y = (float(v) for v in scoord.GraphicData)
        mask = np.asarray(mask, dtype=bool)
        rows, columns = mask.shape
        assert mask[int(y), int(x)], identifier
        dx, dy, w, h = LABEL_BOX
        x0, y0 = int(x + dx * columns), int(y + dy * rows)
        box = mask[y0 : y0 + int(h * rows), x0 : x0 + int(w * columns)]
        assert box.size and box.all(), identifier


def test_label_point_empty_and_unfitting_masks() -> None:
    assert label_point(np.zeros((64, 64), dtype=bool)) is None
    # Too narrow for the text anywhere: still a point in the lung, the best covered.
    mask = np.zeros((200, 200), dtype=bool)
    mask[20:180, 90:100] = True
    [[x, y]] = label_point(mask)
    assert mask[int(y), int(x)]


def _library_images(sr: Dataset) -> list[Dataset]:
    libraries = [item for item in content_items(sr) if concept(item) == ("DCM", "111028")]
    return [item for library in libraries for item in content_items(library) if item.ValueType == "IMAGE"]


def test_image_library_lists_the_source(sr: Dataset, any_source: Dataset) -> None:
    """OHIF finds the image to show an SR on in the Image Library (TID 1601)."""
    [image] = _library_images(sr)
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == any_source.SOPInstanceUID


def test_no_image_library_without_spacing(dx_source: Dataset) -> None:
    source = copy.deepcopy(dx_source)
    del source.PixelSpacing, source.ImagerPixelSpacing
    sr = build_sr(source, make_result(source, spacing=False), ALGORITHM_NAME, ALGORITHM_VERSION)
    assert _library_images(roundtrip(sr)) == []


def test_earlier_image_region_without_a_known_size() -> None:
    """Archive rows from before Rows/Columns were kept: a point inside any image, on that image."""
    case = PriorCase("1.2.3", "1.2.840.10008.5.1.4.1.1.1", "1.2", "1.2.1", None, "normal", 1.0, 0.5)
    region = earlier_image_region(case)
    assert region.GraphicType == "POINT" and [float(v) for v in region.GraphicData] == [0.5, 0.5]
    assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.3"
    sized = earlier_image_region(replace(case, rows=20, columns=10))
    assert sized.GraphicType == "POLYLINE" and [float(v) for v in sized.GraphicData][4:6] == [10, 20]


def test_label_point_of_a_lung_between_grid_points() -> None:
    mask = np.zeros((1024, 1024), dtype=bool)
    mask[3, 5] = True  # off the 8-pixel grid
    assert [float(v) for v in label_point(mask)[0]] == [5.5, 3.5]


def test_image_comments_say_triage_and_class(dx_source: Dataset) -> None:
    """The words OHIF shows for the whole image: the triage decision, then the class."""
    result = make_result(dx_source)
    assert image_comments(result) == ["COVID-19 most likely"]
    rule = "covid19 p >= 0.5"
    result.context = CaseContext(triage=Triage(urgent=True, reasons=(rule,), rule=rule))
    assert image_comments(result) == ["Triage urgent", "COVID-19 most likely"]
    result.context.triage = Triage(urgent=False, reasons=(), rule=rule)
    group = measurement_groups(roundtrip(build_sr(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))
    lines = ohif_lines(group[TRACKING_IMAGE])
    assert lines[:3] == ["Triage routine: ", "COVID-19 most likely: ", "COVID-19 probability: 91.00 %"]
    assert len(lines) == 5


def test_a_clear_lung_is_not_coded_abnormal_opacity(dx_source: Dataset) -> None:
    """Every lung's group carried Finding = Abnormal opacity, the clear lungs of a film it calls
    normal too; now only a lung with an extent of half a point or more."""
    from models.result import LungSeverity

    result = make_result(dx_source)
    result.severity = replace(result.severity, left=LungSeverity(extent=0.1, opacity=0.2))
    groups = measurement_groups(roundtrip(build_sr(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)))

    def findings(group: Dataset) -> list[tuple[str, str]]:
        return [
            (str(c.ConceptCodeSequence[0].CodingSchemeDesignator), str(c.ConceptCodeSequence[0].CodeValue))
            for c in group.ContentSequence
            if c.ValueType == "CODE" and concept(c) == ("DCM", "121071")
        ]

    assert findings(groups[TRACKING_RIGHT]) == [("DCM", "112033")]  # extent 3.0
    assert findings(groups[TRACKING_LEFT]) == []


def test_a_similar_case_gives_no_date_of_the_other_patient(dx_source: Dataset) -> None:
    """Similar cases are other patients' films; their exact study date ("study of 2024-03-09",
    a date of service) went into this patient's report in the PACS."""
    from datetime import date

    from models.result import CaseContext, PriorCase, SimilarCase

    other = PriorCase(
        sop_instance_uid="1.2.826.0.1.3680043.8.498.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid="1.2.826.0.1.3680043.8.498.2",
        series_instance_uid="1.2.826.0.1.3680043.8.498.3",
        study_date=date(2024, 3, 9),
        predicted_class="covid19",
        geographic_extent=4.0,
        opacity=2.0,
        rows=64,
        columns=64,
    )
    result = make_result(dx_source)
    result.context = CaseContext(similar=[SimilarCase(other, 0.2)])
    sr = roundtrip(build_sr(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION))
    texts = [str(getattr(item, "TextValue", "")) for item in content_items(sr)]
    assert "another patient's earlier study" in texts
    assert not any("2024-03-09" in t or "20240309" in t for t in texts)
