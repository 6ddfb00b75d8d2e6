"""Comprehensive SR with a TID 1500 Measurement Report of one analysis.

Content tree (PS3.16 TID 1500), one TID 1410 planar ROI measurement group
each for:

- the predicted class (qualitative evaluation ``Classification`` = class concept);
- each of the four classes (finding type = class concept, ``Probability``
  in UCUM ``1``);
- severity of both lungs (geographic extent 0-8, opacity 0-6, lung area);
- the right and the left lung (extent 0-4, opacity 0-3, lung area), told
  apart by their finding site, whose region is the lung outline.

Image-level groups have the whole image as their region, so that every group
is on the image: OHIF draws them there with their values (see ``_group``).
Every group carries a tracking identifier and UID, the algorithm
identification (TID 4019) and, under its region, the source image. The
Image Library (TID 1601) lists the source where its spacing is known. The
observer is a device (TID 1004) naming the algorithm. ``VerificationFlag``
is UNVERIFIED.
"""

from __future__ import annotations

import logging

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    ComprehensiveSR,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    ObservationContext,
    ObserverContext,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    SourceImageForMeasurement,
    SourceImageForRegion,
    TimePointContext,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from skimage.measure import approximate_polygon, find_contours

from models.result import CLASSES, AnalysisResult, PriorCase
from node.dicom import codes as cxr_codes
from node.dicom.source import (
    algorithm_equipment,
    check_result,
    check_source,
    evidence_header,
    patient_orientation,
)
from node.dicom.uids import derive_device_uid, derive_series_uid, derive_uid, series_number

logger = logging.getLogger(__name__)

KIND = "sr"
SERIES_DESCRIPTION = "CXR Node AI measurement report"

# Tracking identifiers of the measurement groups (TID 1501 row 2); stable
# across versions so viewers and tests can find a group by name.
TRACKING_CLASSIFICATION = "classification"
TRACKING_SEVERITY = "severity both lungs"
TRACKING_RIGHT = "severity right lung"
TRACKING_LEFT = "severity left lung"
TRACKING_TRIAGE = "triage"

# Douglas-Peucker tolerance of the lung outlines, in pixels.
OUTLINE_TOLERANCE_PX = 1.0


def tracking_change(since: str) -> str:
    """Tracking identifier of the change since the patient's ``previous`` or ``first`` study."""
    return f"change since {since} study"


def tracking_similar(rank: int) -> str:
    """Tracking identifier of the ``rank``-th most similar earlier case (from 1)."""
    return f"similar case {rank}"


def tracking_class(name: str) -> str:
    """Tracking identifier of the group holding the probability of one class."""
    return f"probability {name}"


def _num(name: CodedConcept, value: float, unit: CodedConcept) -> Measurement:
    return Measurement(name=name, value=float(value), unit=unit)


def _polyline(source: Dataset, xy: np.ndarray) -> ImageRegion:
    """A closed POLYLINE region on the source image."""
    return ImageRegion(
        graphic_type=GraphicTypeValues.POLYLINE,
        graphic_data=xy,
        source_image=SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
        ),
    )


def image_region(source: Dataset) -> ImageRegion:
    """The whole image as a closed POLYLINE: the region of an image-level group."""
    rows, columns = float(source.Rows), float(source.Columns)
    xy = np.array([[0, 0], [columns, 0], [columns, rows], [0, rows], [0, 0]], dtype=np.float32)
    return _polyline(source, xy)


def _group(
    source: Dataset,
    algorithm_version: str,
    identifier: str,
    algorithm_id: AlgorithmIdentification,
    region: ImageRegion | None = None,
    **kwargs: object,
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group; image-level results have the whole image as their region.

    Every group has a region: OHIF (3.13) places an SR's measurements on the
    image through their regions and stops at the first group without one,
    so a single TID 1501 group would hide every measurement of the report.
    """
    tracking_uid = derive_uid(source.SOPInstanceUID, f"{KIND}:{identifier}", algorithm_version)
    return PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=tracking_uid, identifier=identifier),
        referenced_region=region or image_region(source),
        algorithm_id=algorithm_id,
        **kwargs,  # type: ignore[arg-type]
    )


def _not_assessable() -> list[QualitativeEvaluation]:
    """The coded "not assessable" a group carries instead of numbers the quality check withholds."""
    return [QualitativeEvaluation(name=cxr_codes.ASSESSMENT, value=cxr_codes.NOT_ASSESSABLE)]


def build_measurement_groups(
    source: Dataset,
    result: AnalysisResult,
    algorithm_id: AlgorithmIdentification,
    algorithm_version: str,
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 measurement groups of one result, in report order."""
    quality = result.quality
    groups = [
        _group(
            source,
            algorithm_version,
            TRACKING_CLASSIFICATION,
            algorithm_id,
            qualitative_evaluations=[
                QualitativeEvaluation(
                    name=cxr_codes.CLASSIFICATION,
                    value=cxr_codes.CLASS_CONCEPTS[result.predicted_class],
                )
            ]
            if quality.lungs_found
            else _not_assessable(),
        )
    ]
    for name in CLASSES if quality.lungs_found else ():
        groups.append(
            _group(
                source,
                algorithm_version,
                tracking_class(name),
                algorithm_id,
                finding_type=cxr_codes.CLASS_CONCEPTS[name],
                measurements=[_num(cxr_codes.PROBABILITY, result.classification[name], cxr_codes.UNIT_ONE)],
            )
        )

    severity = result.severity
    right_area = result.lung_area_cm2(result.right_lung)
    left_area = result.lung_area_cm2(result.left_lung)
    both = [
        _num(cxr_codes.GEOGRAPHIC_EXTENT, severity.geographic_extent, cxr_codes.UNIT_SCORE),
        _num(cxr_codes.OPACITY, severity.opacity, cxr_codes.UNIT_SCORE),
    ]
    if right_area is not None and left_area is not None:
        both.append(_num(cxr_codes.AREA, right_area + left_area, cxr_codes.UNIT_CM2))
    if not quality.assessable:  # no scores (nor areas) off an outline that failed the check
        both = []
    groups.append(
        _group(
            source,
            algorithm_version,
            TRACKING_SEVERITY,
            algorithm_id,
            finding_type=cxr_codes.ABNORMAL_OPACITY,
            finding_sites=[FindingSite(cxr_codes.LUNG)],
            measurements=both,
            qualitative_evaluations=None if quality.assessable else _not_assessable(),
        )
    )
    if not quality.assessable:
        return groups
    for identifier, lung, laterality, area, mask in (
        (TRACKING_RIGHT, severity.right, cxr_codes.RIGHT, right_area, result.right_lung),
        (TRACKING_LEFT, severity.left, cxr_codes.LEFT, left_area, result.left_lung),
    ):
        measurements = [
            _num(cxr_codes.GEOGRAPHIC_EXTENT, lung.extent, cxr_codes.UNIT_SCORE),
            _num(cxr_codes.OPACITY, lung.opacity, cxr_codes.UNIT_SCORE),
        ]
        if area is not None:
            measurements.append(_num(cxr_codes.AREA, area, cxr_codes.UNIT_CM2))
        groups.append(
            _group(
                source,
                algorithm_version,
                identifier,
                algorithm_id,
                region=lung_region(source, mask),  # the lung outline; the image if no mask
                finding_type=cxr_codes.ABNORMAL_OPACITY,
                finding_sites=[FindingSite(cxr_codes.LUNG, laterality=laterality)],
                measurements=measurements,
            )
        )
    return groups


def _study_label(case: PriorCase) -> str:
    return f"study of {case.study_date.isoformat()}" if case.study_date else "study of unknown date"


def context_groups(
    source: Dataset,
    result: AnalysisResult,
    algorithm_id: AlgorithmIdentification,
    algorithm_version: str,
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """TID 1410 groups of what the node's archive adds (:mod:`node.archive`), after the image's own.

    - ``triage``: qualitative evaluation Triage priority = Urgent / Routine (SCT);
    - ``change since previous study`` / ``... first study``: change in extent and
      opacity and the interval in days, each measurement's source the earlier
      image, the group's time point that study's date (TID 1502);
    - ``similar case N``: the earlier image's cosine distance in the retrieval
      embedding, its extent and opacity (source: that image), its class, its date.

    Every group keeps this image as its region (see :func:`_group`); the
    earlier images are referenced by their measurements and listed as evidence.
    """
    context = result.context
    if context is None:
        return []
    groups = []
    if context.triage is not None:
        groups.append(
            _group(
                source,
                algorithm_version,
                TRACKING_TRIAGE,
                algorithm_id,
                qualitative_evaluations=[
                    QualitativeEvaluation(
                        name=cxr_codes.TRIAGE,
                        value=cxr_codes.URGENT if context.triage.urgent else cxr_codes.ROUTINE,
                    )
                ],
            )
        )
    for change in context.changes:
        ref = [SourceImageForMeasurement(change.case.sop_class_uid, change.case.sop_instance_uid)]
        measurements = [
            Measurement(
                cxr_codes.EXTENT_CHANGE, change.geographic_extent, cxr_codes.UNIT_SCORE, referenced_images=ref
            ),
            Measurement(
                cxr_codes.OPACITY_CHANGE, change.opacity, cxr_codes.UNIT_SCORE, referenced_images=ref
            ),
        ]
        if change.days is not None:
            measurements.append(
                Measurement(cxr_codes.INTERVAL, change.days, cxr_codes.UNIT_DAY, referenced_images=ref)
            )
        groups.append(
            _group(
                source,
                algorithm_version,
                tracking_change(change.since),
                algorithm_id,
                time_point_context=TimePointContext(time_point=f"{change.since} {_study_label(change.case)}"),
                finding_type=cxr_codes.ABNORMAL_OPACITY,
                finding_sites=[FindingSite(cxr_codes.LUNG)],
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
                time_point_context=TimePointContext(time_point=_study_label(case)),
                finding_type=cxr_codes.SIMILAR_CASE,
                measurements=[
                    Measurement(
                        cxr_codes.EMBEDDING_DISTANCE,
                        similar.distance,
                        cxr_codes.UNIT_ONE,
                        referenced_images=ref,
                    ),
                    Measurement(
                        cxr_codes.GEOGRAPHIC_EXTENT,
                        case.geographic_extent,
                        cxr_codes.UNIT_SCORE,
                        referenced_images=ref,
                    ),
                    Measurement(cxr_codes.OPACITY, case.opacity, cxr_codes.UNIT_SCORE, referenced_images=ref),
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
        imaging_measurements=build_measurement_groups(header, result, algorithm_id, algorithm_version)
        + context_groups(header, result, algorithm_id, algorithm_version),
        referenced_images=[library] if library is not None else None,
    )
    sop_instance_uid = derive_uid(source.SOPInstanceUID, KIND, algorithm_version)
    sr = ComprehensiveSR(
        evidence=[header, *context_evidence(result)],
        content=report[0],
        series_instance_uid=derive_series_uid(source.StudyInstanceUID, KIND, algorithm_version),
        series_number=series_number(KIND),
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
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


__all__ = ["build_sr", "build_measurement_groups", "model_parameters", "tracking_class"]
