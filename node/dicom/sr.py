"""Comprehensive SR with a TID 1500 Measurement Report of one analysis.

Content tree (PS3.16 TID 1500), in this order:

- each lung's scores (extent 0-4, opacity 0-3, lung area), a TID 1501 group:
  the lung as the finding site of every measurement, the scores also in words
  as Comment TEXT items (``"Extent 2.3 of 4"``), the area (else the extent)
  with a POINT inside that lung under it, whose purpose of reference (TID 320)
  says it only anchors the text (``99CXRNODE LABELANCHOR``);
- each lung's outline, a TID 1410 group with a closed POLYLINE;
- the whole image, a TID 1501 group: the predicted class and the triage
  decision (qualitative evaluations, and in words as one Comment), each
  class's probability (UCUM ``%``, the most probable first, with the label
  anchor) and the severity of both lungs (extent 0-8, opacity 0-6, area);
- what the node's archive adds (:func:`context_groups`): the change since the
  previous and the first study, and similar earlier cases, TID 1410 groups
  each with the earlier image as its region.

The layout follows what OHIF (3.13.2, ``@ohif/extension-cornerstone-dicom-sr``,
read in its bundle) does with a TID 1500 report, since that is where a
radiologist reads it:

- for a group with a region (TID 1410) it writes one line per NUM,
  ``"<concept meaning>: <value to 2 decimals> <unit code value>"``, and a
  group-level finding site as ``"363698007: <site>"``; TEXT and CODE items
  are not shown. The unit's code value is always written, never its meaning:
  a score's UCUM unit reads ``{score}`` (or ``1``);
- for a group without one (TID 1501) it writes each Comment (DCM 121106) as
  ``"<text>: "``, then each NUM that has no children or has a SCOORD; a NUM
  with a finding site and no SCOORD it skips. It places the text by the
  SCOORDs under the NUMs, and a group with none breaks the whole report (its
  loader reads the first coordinates of every group). Hence the words in
  Comments, the scores with their finding sites (kept, not shown) and the
  anchor under the area or a probability, whose UCUM code (``cm2``, ``%``)
  reads as a unit;
- it writes at most 5 lines a group, to the right of the right-most point at
  mid-height; for a POINT, below right of it (``LABEL_BOX``). So each lung's
  anchor is a point whose text lies inside that lung (:func:`label_point`)
  and the whole image's is low on the image's left edge, its text below the
  lungs inside the image at any window width (:func:`image_anchor`);
- the earlier images' groups have those images as region: OHIF does not draw
  them on this one.

Every group carries a tracking identifier and UID and the algorithm
identification (TID 4019). The Image Library (TID 1601) lists the source
where its spacing is known. The observer is a device (TID 1004) naming the
algorithm. ``VerificationFlag`` is UNVERIFIED.
"""

from __future__ import annotations

import logging

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ComprehensiveSR,
    CoordinatesForMeasurement,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurement,
    SourceImageForRegion,
    TextContentItem,
    TimePointContext,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from skimage.measure import approximate_polygon, find_contours

from models.quality import SHORT_REASONS
from models.result import CLASSES, AnalysisResult, PriorCase
from models.severity import PER_LUNG_MAX
from node.dicom import codes as cxr_codes
from node.dicom.source import (
    algorithm_equipment,
    check_result,
    check_source,
    evidence_header,
    patient_orientation,
)
from node.dicom.uids import derive_device_uid, derive_series_uid, derive_uid, instance_number, series_number

logger = logging.getLogger(__name__)

KIND = "sr"
SERIES_DESCRIPTION = "CXR Node AI measurement report"

# Tracking identifiers of the measurement groups (TID 1501 row 2); stable
# across versions so viewers and tests can find a group by name.
TRACKING_IMAGE = "whole image"
TRACKING_RIGHT = "severity right lung"
TRACKING_LEFT = "severity left lung"
TRACKING_RIGHT_OUTLINE = "right lung outline"
TRACKING_LEFT_OUTLINE = "left lung outline"

# Douglas-Peucker tolerance of the lung outlines, in pixels.
OUTLINE_TOLERANCE_PX = 1.0

# Where OHIF 3.13 writes the numbers of a POINT region (DICOMSRDisplayTool.renderPoint,
# getTextBoxCoordsCanvas, drawLinkedTextBox): an arrow to the point from (x + columns/10,
# y + rows/10), the text from about (x + 0.125 columns, y + 0.08 rows) on. The box that
# holds a lung's three lines is about 120 x 55 screen pixels whatever the window, so it
# covers more of the image in a smaller viewport: 0.17 x 0.065 of the image at 1920 x 1080,
# 0.23 x 0.09 at 1280 x 800 (measured in tests/viewer). Sized between the two: a bigger box
# no longer fits beside the offset in an ordinary lung, and the point then falls back to the
# best covered place. (dx, dy, width, height) from the point, in fractions of (columns, rows).
LABEL_BOX = (0.125, 0.07, 0.20, 0.08)


# A measurement group of the report: TID 1501 (words and numbers) or TID 1410 (a region).
Group = MeasurementsAndQualitativeEvaluations | PlanarROIMeasurementsAndQualitativeEvaluations


def tracking_change(since: str) -> str:
    """Tracking identifier of the change since the patient's ``previous`` or ``first`` study."""
    return f"change since {since} study"


def tracking_similar(rank: int) -> str:
    """Tracking identifier of the ``rank``-th most similar earlier case (from 1)."""
    return f"similar case {rank}"


# Decimals of every NUM: a thousandth of a score, a percent or a square centimetre is
# below what the models resolve; more digits only make a dump harder to read.
DECIMALS = 3


def _measurement(name: CodedConcept, value: float, unit: CodedConcept, **kwargs: object) -> Measurement:
    """A TID 300 measurement, its value rounded to ``DECIMALS``."""
    return Measurement(name, round(float(value), DECIMALS), unit, **kwargs)  # type: ignore[arg-type]


def _num(
    name: CodedConcept, value: float, unit: CodedConcept, sites: list[FindingSite] | None = None
) -> Measurement:
    return _measurement(name, value, unit, finding_sites=sites)


def _region(
    sop_class_uid: str, sop_instance_uid: str, xy: np.ndarray, graphic_type: GraphicTypeValues
) -> ImageRegion:
    return ImageRegion(
        graphic_type=graphic_type,
        graphic_data=xy,
        source_image=SourceImageForRegion(
            referenced_sop_class_uid=sop_class_uid,
            referenced_sop_instance_uid=sop_instance_uid,
        ),
    )


def _polyline(source: Dataset, xy: np.ndarray) -> ImageRegion:
    """A closed POLYLINE region on the source image."""
    return _region(source.SOPClassUID, source.SOPInstanceUID, xy, GraphicTypeValues.POLYLINE)


def _whole(rows: float, columns: float) -> np.ndarray:
    return np.array([[0, 0], [columns, 0], [columns, rows], [0, rows], [0, 0]], dtype=np.float32)


def image_region(source: Dataset) -> ImageRegion:
    """The whole image as a closed POLYLINE: the region of the image-level group."""
    return _polyline(source, _whole(float(source.Rows), float(source.Columns)))


def earlier_image_region(case: PriorCase) -> ImageRegion:
    """The region of a group about an earlier image: that image as a whole.

    Archives from before the image size was kept know no size: the region is
    then the centre of the image's first pixel, which is inside any image.
    """
    if case.rows and case.columns:
        xy, kind = _whole(float(case.rows), float(case.columns)), GraphicTypeValues.POLYLINE
    else:
        xy, kind = np.array([[0.5, 0.5]], dtype=np.float32), GraphicTypeValues.POINT
    return _region(case.sop_class_uid, case.sop_instance_uid, xy, kind)


def label_point(mask: np.ndarray) -> np.ndarray | None:
    """A POINT inside a lung such that OHIF's text for it lies inside that lung too.

    Among the mask's pixels (on a grid), of those whose text box (``LABEL_BOX``)
    the mask covers most, the one whose box is nearest the lung's centre.
    (column, row) of the pixel centre; None for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    rows, columns = mask.shape
    step = max(1, min(rows, columns) // 128)  # on a grid of about 128 pixels a side: fast enough
    if not mask[::step, ::step].any():
        step = 1  # a lung so small that the grid misses it
    grid = mask[::step, ::step]
    g_rows, g_columns = grid.shape
    dx, dy = round(LABEL_BOX[0] * columns / step), round(LABEL_BOX[1] * rows / step)
    w, h = max(1, round(LABEL_BOX[2] * columns / step)), max(1, round(LABEL_BOX[3] * rows / step))
    covered = np.pad(grid.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys, xs = np.nonzero(grid)
    y0, x0 = np.clip(ys + dy, 0, g_rows), np.clip(xs + dx, 0, g_columns)
    y1, x1 = np.clip(ys + dy + h, 0, g_rows), np.clip(xs + dx + w, 0, g_columns)
    inside = covered[y1, x1] - covered[y0, x1] - covered[y1, x0] + covered[y0, x0]
    centre_y, centre_x = (float(v.mean()) for v in np.nonzero(grid))
    distance = np.hypot((ys + dy + h / 2 - centre_y) / g_rows, (xs + dx + w / 2 - centre_x) / g_columns)
    # The best covered boxes (all of the text inside the lung where it fits), then the most central.
    best = int(np.argmin(np.where(inside == inside.max(), distance, np.inf)))
    ys, xs = ys * step, xs * step
    return np.array([[xs[best] + 0.5, ys[best] + 0.5]], dtype=np.float32)


def _group(
    source: Dataset,
    algorithm_version: str,
    identifier: str,
    algorithm_id: AlgorithmIdentification,
    region: ImageRegion,
    **kwargs: object,
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group: every group has a region (see the module docstring)."""
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(source, algorithm_version, identifier),
        referenced_region=region,
        algorithm_id=algorithm_id,
        **kwargs,  # type: ignore[arg-type]
    )


def _tracking(source: Dataset, algorithm_version: str, identifier: str) -> TrackingIdentifier:
    tracking_uid = derive_uid(source.SOPInstanceUID, f"{KIND}:{identifier}", algorithm_version)
    return TrackingIdentifier(uid=tracking_uid, identifier=identifier)


def _text_group(
    source: Dataset,
    algorithm_version: str,
    identifier: str,
    algorithm_id: AlgorithmIdentification,
    comments: list[str],
    measurements: list[Measurement],
    **kwargs: object,
) -> MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group with its words as Comment TEXT items, which OHIF writes as text.

    One of ``measurements`` must carry the label anchor (:func:`_anchor`): OHIF
    places the text there and fails on a group without coordinates.
    """
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(source, algorithm_version, identifier),
        algorithm_id=algorithm_id,
        measurements=measurements,
        **kwargs,  # type: ignore[arg-type]
    )
    container = group[0]
    for text in comments:
        container.ContentSequence.append(
            TextContentItem(
                name=cxr_codes.COMMENT, value=text, relationship_type=RelationshipTypeValues.CONTAINS
            )
        )
    return group


def _anchor(source: Dataset, point: np.ndarray) -> CoordinatesForMeasurement:
    """A POINT under a measurement (TID 300/320) that says only where a viewer writes the text."""
    return CoordinatesForMeasurement(
        graphic_type=GraphicTypeValues.POINT,
        graphic_data=point,
        source_image=SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
        ),
        purpose=cxr_codes.LABEL_ANCHOR,
    )


def _not_assessable(reasons: tuple[str, ...], lungs_found: bool) -> list[QualitativeEvaluation]:
    """The coded "not assessable" a group carries instead of numbers the quality check withholds,
    and why: one coded reason per failed check (:data:`models.quality.REASONS`). With the lungs
    found the class stands and only the severity is withheld, and the concept says so."""
    name = cxr_codes.SEVERITY_ASSESSMENT if lungs_found else cxr_codes.ASSESSMENT
    return [QualitativeEvaluation(name=name, value=cxr_codes.NOT_ASSESSABLE)] + [
        QualitativeEvaluation(name=cxr_codes.NOT_ASSESSABLE_REASON, value=cxr_codes.QC_REASONS[reason])
        for reason in reasons
        if reason in cxr_codes.QC_REASONS
    ]


def score_text(name: str, value: float, maximum: float) -> str:
    """A score as a radiologist reads it: ``"Extent 2.3 of 4"``."""
    return f"{name} {value:.1f} of {maximum:g}"


def build_measurement_groups(
    source: Dataset,
    result: AnalysisResult,
    algorithm_id: AlgorithmIdentification,
    algorithm_version: str,
) -> list[Group]:
    """TID 1501/1410 groups of one result, in report order (the lungs first: OHIF opens on the first)."""
    severity = result.severity
    right_area = result.lung_area_cm2(result.right_lung)
    left_area = result.lung_area_cm2(result.left_lung)
    lungs = (
        (
            TRACKING_RIGHT,
            TRACKING_RIGHT_OUTLINE,
            severity.right,
            cxr_codes.RIGHT,
            right_area,
            result.right_lung,
        ),
        (TRACKING_LEFT, TRACKING_LEFT_OUTLINE, severity.left, cxr_codes.LEFT, left_area, result.left_lung),
    )
    groups: list[Group] = []
    # No per-lung scores nor outlines off an outline that failed the quality check: the
    # whole-image group says "not assessable" instead.
    assessed = lungs if result.quality.assessable else ()
    for identifier, _, lung, laterality, area, mask in assessed:
        sites = [FindingSite(cxr_codes.LUNG, laterality=laterality)]
        point = label_point(mask)
        if point is None:  # no lung found: the image's centre
            point = np.array([[source.Columns / 2, source.Rows / 2]], dtype=np.float32)
        anchor = [_anchor(source, point)]
        # The anchor goes with the area where there is one (OHIF writes that measurement,
        # "Area: 123.45 cm2", and leaves out those with a finding site and no coordinates:
        # the scores, which it would write with their raw unit code "{score}"). Without a
        # pixel spacing there is no area, and no Image Library either, without which OHIF
        # finds no image to draw the report on: the extent carries it.
        measurements = [
            _measurement(
                cxr_codes.GEOGRAPHIC_EXTENT,
                lung.extent,
                cxr_codes.UNIT_SCORE,
                finding_sites=sites,
                referenced_coordinates=None if area is not None else anchor,
            ),
            _num(cxr_codes.OPACITY, lung.opacity, cxr_codes.UNIT_SCORE, sites),
        ]
        if area is not None:
            measurements.append(
                _measurement(
                    cxr_codes.AREA,
                    area,
                    cxr_codes.UNIT_CM2,
                    finding_sites=sites,
                    referenced_coordinates=anchor,
                )
            )
        comments = [
            score_text("Extent", lung.extent, PER_LUNG_MAX["geographic_extent"]),
            score_text("Opacity", lung.opacity, PER_LUNG_MAX["opacity"]),
        ]
        groups.append(
            _text_group(
                source,
                algorithm_version,
                identifier,
                algorithm_id,
                comments,
                measurements,
                # A finding only where there is one: a lung scored clear is not "abnormal opacity"
                **({"finding_type": cxr_codes.ABNORMAL_OPACITY} if lung.extent >= FINDING_EXTENT else {}),
            )
        )
    for _, identifier, _, _, _, mask in assessed:
        outline = lung_region(source, mask)
        if outline is not None:
            groups.append(_group(source, algorithm_version, identifier, algorithm_id, outline))
    groups.append(image_group(source, result, algorithm_id, algorithm_version))
    return groups


# The coded value of each Triage.priority.
TRIAGE_PRIORITIES = {
    "urgent": cxr_codes.URGENT,
    "routine": cxr_codes.ROUTINE,
    "not assessed": cxr_codes.NOT_ASSESSABLE,
}

# A lung's group names the finding "Abnormal opacity" from this extent on (half of one of
# Cohen's 0-4 points per lung): every lung was coded so, the clear ones of a normal film too.
FINDING_EXTENT = 0.5

# Row (fraction of the rows) of the whole image's label anchor: OHIF writes its five lines
# from about 7/100 of the rows below it (``LABEL_BOX``) to about 0.19 below it in a
# 700-pixel-high viewport, so below the lungs and inside the image.
IMAGE_ANCHOR_ROW = 0.74


def image_anchor(source: Dataset) -> np.ndarray:
    """Where the whole image's text goes: an arrow to the image's left edge, low down.

    OHIF writes a POINT's text from about 1/8 of the columns on (``LABEL_BOX``):
    over the bottom of the image, below the lungs, inside the image at any window
    width (text beside the image is cut off in narrow windows; at the top, OHIF's
    own prompts cover it).
    """
    row = float(np.floor(IMAGE_ANCHOR_ROW * float(source.Rows))) + 0.5  # a pixel's centre
    return np.array([[0.5, row]], dtype=np.float32)


def image_comments(result: AnalysisResult) -> list[str]:
    """The whole image in words, one short line each (dcmtk's ``dsrdump`` cuts a TEXT at 27
    characters): the triage decision, the most likely class, the quality check and, when it
    failed, its first reason."""
    quality = result.quality
    comments = []
    context = result.context
    if context is not None and context.triage is not None:
        comments.append(f"Triage {context.triage.priority}")
    reported = result.reported_class
    if reported:
        comments.append(f"{cxr_codes.CLASS_LABELS[reported]} most likely")
    if not quality.assessable:
        comments.append("Severity not assessable")
        comments += [SHORT_REASONS[r] for r in quality.reasons[:1] if r in SHORT_REASONS]
    return comments


def image_group(
    source: Dataset,
    result: AnalysisResult,
    algorithm_id: AlgorithmIdentification,
    algorithm_version: str,
) -> Group:
    """The whole image's group: class, triage, probabilities, severity of both lungs.

    One group, so that OHIF writes one block of text. A TID 1501 group whose
    words (triage, class) are Comments and whose most probable class carries
    the label anchor (:func:`image_anchor`): OHIF writes the comments, then the
    probabilities (at most 5 lines: the least probable classes may not show);
    the scores of both lungs, with their finding
    site and no coordinates, it leaves out. Without lungs there are no
    probabilities to carry the anchor: a TID 1410 group over the whole image,
    which OHIF draws without text.
    """
    quality = result.quality
    evaluations = []
    reported = result.reported_class
    if reported:
        evaluations.append(
            QualitativeEvaluation(name=cxr_codes.CLASSIFICATION, value=cxr_codes.CLASS_CONCEPTS[reported])
        )
    if not quality.assessable:  # the numbers the quality check withholds are left out
        evaluations += _not_assessable(quality.reasons, quality.lungs_found)
    context = result.context
    if context is not None and context.triage is not None:
        priority = TRIAGE_PRIORITIES[context.triage.priority]
        evaluations.append(QualitativeEvaluation(name=cxr_codes.TRIAGE, value=priority))
    ranked = sorted(CLASSES, key=lambda name: -result.classification[name])
    anchor = [_anchor(source, image_anchor(source))]
    probabilities = [
        _measurement(
            cxr_codes.CLASS_PROBABILITY[name],
            100.0 * result.classification[name],
            cxr_codes.UNIT_PERCENT,
            referenced_coordinates=anchor if rank == 0 else None,
        )
        for rank, name in enumerate(ranked)
    ]
    severity = result.severity
    both = [FindingSite(cxr_codes.LUNG)]
    scores = [
        _num(cxr_codes.GEOGRAPHIC_EXTENT, severity.geographic_extent, cxr_codes.UNIT_SCORE, both),
        _num(cxr_codes.OPACITY, severity.opacity, cxr_codes.UNIT_SCORE, both),
    ]
    right_area = result.lung_area_cm2(result.right_lung)
    left_area = result.lung_area_cm2(result.left_lung)
    if right_area is not None and left_area is not None:
        scores.append(_num(cxr_codes.AREA, right_area + left_area, cxr_codes.UNIT_CM2, both))
    if not quality.assessable:
        scores = []
    if not quality.lungs_found:
        return _group(
            source,
            algorithm_version,
            TRACKING_IMAGE,
            algorithm_id,
            image_region(source),
            measurements=scores,
            qualitative_evaluations=evaluations,
        )
    return _text_group(
        source,
        algorithm_version,
        TRACKING_IMAGE,
        algorithm_id,
        image_comments(result),
        [*probabilities, *scores],
        qualitative_evaluations=evaluations,
    )


SIMILAR_TIME_POINT = "another patient's earlier study"


def _study_label(case: PriorCase) -> str:
    return f"study of {case.study_date.isoformat()}" if case.study_date else "study of unknown date"


def context_groups(
    source: Dataset,
    result: AnalysisResult,
    algorithm_id: AlgorithmIdentification,
    algorithm_version: str,
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 groups of what the node's archive adds (:mod:`node.archive`), after the image's own.

    - ``change since previous study`` / ``... first study``: change in extent and
      opacity and the interval in days, each measurement's source the earlier
      image, the group's time point that study's date (TID 1502);
    - ``similar case N``: the earlier image's cosine distance in the retrieval
      embedding, its extent and opacity (source: that image), its class, its date.

    Each group's region is the earlier image (:func:`earlier_image_region`):
    OHIF shows them with that image, not on this one. The triage decision is
    in the whole-image group (:func:`image_group`).
    """
    context = result.context
    if context is None:
        return []
    groups = []
    both = [FindingSite(cxr_codes.LUNG)]
    for change in context.changes:
        ref = [SourceImageForMeasurement(change.case.sop_class_uid, change.case.sop_instance_uid)]
        measurements = [
            _measurement(
                cxr_codes.EXTENT_CHANGE,
                change.geographic_extent,
                cxr_codes.UNIT_SCORE,
                referenced_images=ref,
                finding_sites=both,
            ),
            _measurement(
                cxr_codes.OPACITY_CHANGE,
                change.opacity,
                cxr_codes.UNIT_SCORE,
                referenced_images=ref,
                finding_sites=both,
            ),
        ]
        if change.days is not None:
            measurements.append(
                _measurement(cxr_codes.INTERVAL, change.days, cxr_codes.UNIT_DAY, referenced_images=ref)
            )
        groups.append(
            _group(
                source,
                algorithm_version,
                tracking_change(change.since),
                algorithm_id,
                earlier_image_region(change.case),
                time_point_context=TimePointContext(time_point=f"{change.since} {_study_label(change.case)}"),
                finding_type=cxr_codes.ABNORMAL_OPACITY,
                measurements=measurements,
            )
        )
    for rank, similar in enumerate(context.similar, 1):
        case = similar.case
        ref = [SourceImageForMeasurement(case.sop_class_uid, case.sop_instance_uid)]
        groups.append(
            _group(
                source,
                algorithm_version,
                tracking_similar(rank),
                algorithm_id,
                earlier_image_region(case),
                # another patient's study: no date of it in this patient's report (a date of
                # service identifies); the image's UIDs stay, for a viewer to open it
                time_point_context=TimePointContext(time_point=SIMILAR_TIME_POINT),
                finding_type=cxr_codes.SIMILAR_CASE,
                measurements=[
                    _measurement(
                        cxr_codes.EMBEDDING_DISTANCE,
                        similar.distance,
                        cxr_codes.UNIT_ONE,
                        referenced_images=ref,
                    ),
                    _measurement(
                        cxr_codes.GEOGRAPHIC_EXTENT,
                        case.geographic_extent,
                        cxr_codes.UNIT_SCORE,
                        referenced_images=ref,
                        finding_sites=both,
                    ),
                    _measurement(
                        cxr_codes.OPACITY,
                        case.opacity,
                        cxr_codes.UNIT_SCORE,
                        referenced_images=ref,
                        finding_sites=both,
                    ),
                ],
                qualitative_evaluations=[
                    QualitativeEvaluation(
                        name=cxr_codes.CLASSIFICATION, value=cxr_codes.CLASS_CONCEPTS[case.predicted_class]
                    )
                ],
            )
        )
    return groups


def context_evidence(result: AnalysisResult) -> list[Dataset]:
    """Minimal headers of the earlier images the context groups reference (Pertinent Other Evidence)."""
    context = result.context
    if context is None:
        return []
    cases = {c.case.sop_instance_uid: c.case for c in context.changes}
    cases.update({s.case.sop_instance_uid: s.case for s in context.similar})
    evidence = []
    for case in cases.values():
        ds = Dataset()
        ds.StudyInstanceUID = case.study_instance_uid
        ds.SeriesInstanceUID = case.series_instance_uid
        ds.SOPClassUID = case.sop_class_uid
        ds.SOPInstanceUID = case.sop_instance_uid
        evidence.append(ds)
    return evidence


def lung_region(source: Dataset, mask: np.ndarray) -> ImageRegion | None:
    """Outline of the largest part of a lung mask as a closed POLYLINE.

    SCOORD coordinates are (column, row) with (0, 0) at the top left corner
    of the top left pixel (PS3.3 C.18.6.1.1), so pixel centres are at +0.5.
    None when the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    found_rows, found_cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(found_rows):
        return None
    # Contours of the box around the mask only (the same contours, a fraction of
    # the time), padded with zeros, which also closes them at the image border.
    r0, c0 = found_rows[0], found_cols[0]
    padded = np.pad(mask[r0 : found_rows[-1] + 1, c0 : found_cols[-1] + 1], 1).astype(np.float32)
    contours = find_contours(padded, 0.5)
    contour = max(contours, key=len) + (r0 - 1.0, c0 - 1.0)
    contour = approximate_polygon(contour, tolerance=OUTLINE_TOLERANCE_PX)
    if len(contour) < 4:
        return None
    rows, columns = mask.shape
    xy = np.stack(
        [np.clip(contour[:, 1] + 0.5, 0, columns), np.clip(contour[:, 0] + 0.5, 0, rows)], axis=1
    ).astype(np.float32)
    xy[-1] = xy[0]  # closed polyline
    return _polyline(source, xy)


def model_parameters(models: dict[str, str]) -> list[str]:
    """TID 4019 Algorithm Parameters: one ``"name@version (role)"`` TEXT item per model.

    TEXT is UT (PS3.3 C.17.3.2.1), so nothing is ever cut; the model's
    name@version leads because displays shorten long items from the end
    (dcmtk's ``dsrdump`` shows 27 characters and "..." by default) and the
    version is what a reader needs to see.
    """
    return [f"{model} ({role})" for role, model in sorted(models.items())]


def library_header(header: Dataset) -> Dataset | None:
    """The source as highdicom's Image Library (TID 1601/1603) needs it, or None.

    TID 1603 describes a projection image by its Patient Orientation and
    Imager Pixel Spacing. CR often lacks both: the orientation then is the
    radiological default the models assume (as in the SC and SEG), and the
    spacing is the CR's Pixel Spacing (PS3.3 C.8.1.2 calls it the spacing at
    the imaging plate, which is what Imager Pixel Spacing means). Without any
    spacing there is no library. Viewers need it: OHIF finds the image on
    which to draw the measurements in the Image Library, nowhere else.
    """
    spacing = header.get("ImagerPixelSpacing") or header.get("PixelSpacing")
    if not (spacing and len(spacing) == 2 and all(float(v) > 0 for v in spacing)):
        return None
    library = Dataset()
    library.update(header)
    library.ImagerPixelSpacing = list(spacing)
    library.PatientOrientation = list(patient_orientation(header))
    return library


def build_sr(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
) -> ComprehensiveSR:
    """Build the Comprehensive SR (TID 1500) of one analysis.

    Parameters
    ----------
    source
        The analysed CR or DX image (header only is used).
    result
        What the models said about it.
    algorithm_name, algorithm_version
        From the model registry; named in TID 4019 and the device observer.

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        In the source's study, in its own series; UIDs derived from the
        source SOP Instance UID, ``"sr"`` and ``algorithm_version``.
    """
    check_source(source, result)
    check_result(result)
    header = evidence_header(source)

    parameters = model_parameters(result.models)
    algorithm_id = AlgorithmIdentification(
        name=algorithm_name,
        version=algorithm_version,
        parameters=parameters or None,
        manufacturer=cxr_codes.MANUFACTURER,
    )
    observer = ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derive_device_uid(algorithm_name, algorithm_version),
            name=algorithm_name,
            manufacturer_name=cxr_codes.MANUFACTURER,
            model_name=algorithm_version,
        ),
    )
    library = library_header(header)
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=cxr_codes.CHEST_XRAY,
        imaging_measurements=[
            *build_measurement_groups(header, result, algorithm_id, algorithm_version),
            *context_groups(header, result, algorithm_id, algorithm_version),
        ],
        referenced_images=[library] if library is not None else None,
    )
    sop_instance_uid = derive_uid(source.SOPInstanceUID, KIND, algorithm_version)
    sr = ComprehensiveSR(
        evidence=[header, *context_evidence(result)],
        content=report[0],
        series_instance_uid=derive_series_uid(source.StudyInstanceUID, KIND, algorithm_version),
        series_number=series_number(KIND),
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(source),
        manufacturer=cxr_codes.MANUFACTURER,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        series_description=SERIES_DESCRIPTION,
        is_complete=True,
        is_final=False,
        is_verified=False,  # VerificationFlag UNVERIFIED (PS3.3 C.17.2.1)
        contributing_equipment=[algorithm_equipment(algorithm_name, algorithm_version)],
        coding_schemes=[cxr_codes.private_scheme_item()],
    )
    logger.info(
        "built SR %s for source %s (%s %s)",
        sop_instance_uid,
        source.SOPInstanceUID,
        algorithm_name,
        algorithm_version,
    )
    return sr


__all__ = ["build_sr", "build_measurement_groups", "label_point", "model_parameters"]
