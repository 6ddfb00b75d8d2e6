"""DICOM Segmentation of the right and left lungs (PS3.3 A.51).

BINARY, one frame per segment, two segments (SCT 3341006 right lung, SCT
44029006 left lung), referencing the analysed CR or DX image. A projection
image has no Frame of Reference or Image Plane Module; highdicom then builds
the SEG without a frame of reference and without plane positions, matching
frames to the single source frame by the Derivation Image Sequence. Plane
Orientation (Patient) is absent on purpose: PS3.3 A.51.5 allows it only with
a patient-relative Frame of Reference. OHIF 3.13 requires it, so it cannot
overlay this SEG (see ``tests/viewer/test_ohif.py``).
"""

from __future__ import annotations

import logging

import numpy as np
from highdicom import AlgorithmIdentificationSequence, PixelMeasuresSequence
from highdicom.color import CIELabColor
from highdicom.seg import (
    SegmentAlgorithmTypeValues,
    Segmentation,
    SegmentationTypeValues,
    SegmentDescription,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from models.result import AnalysisResult
from node.dicom import codes as cxr_codes
from node.dicom.source import (
    algorithm_equipment,
    check_source,
    evidence_header,
    patient_orientation,
)
from node.dicom.uids import derive_series_uid, derive_uid, instance_number, series_number

logger = logging.getLogger(__name__)

KIND = "seg"
SERIES_DESCRIPTION = "CXR Node AI lung segmentation"

# (label, segmented property type, display colour as sRGB-ish CIELab)
SEGMENTS = (
    ("Right lung", cxr_codes.RIGHT_LUNG, CIELabColor(60.0, -50.0, 40.0)),
    ("Left lung", cxr_codes.LEFT_LUNG, CIELabColor(60.0, 30.0, -60.0)),
)


def _pixel_measures(result: AnalysisResult) -> PixelMeasuresSequence | None:
    if result.pixel_spacing_mm is None:
        return None
    # A projection image has no slice thickness; Pixel Spacing alone (PS3.3 C.7.6.16.2.1).
    return PixelMeasuresSequence(
        pixel_spacing=tuple(float(v) for v in result.pixel_spacing_mm),
        slice_thickness=None,
    )


# Which lung the segments hold (LungNet has two styles; the node reports the V7 one).
LUNG_DEFINITION = "whole lung field, incl. lung behind the heart (V7 style)"


def _describe(description: SegmentDescription) -> SegmentDescription:
    """Segment Description (0062,0006, LO <= 64 chars): the lung definition the segment follows."""
    description.SegmentDescription = LUNG_DEFINITION
    return description


def build_seg(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
) -> Segmentation:
    """Build the BINARY lung Segmentation of one analysis.

    Parameters
    ----------
    source
        The analysed CR or DX image (header only is used).
    result
        ``right_lung`` and ``left_lung`` at the source's Rows x Columns.
    algorithm_name, algorithm_version
        From the model registry; in the segment algorithm identification.

    Returns
    -------
    highdicom.seg.Segmentation
        In the source's study, in its own series; UIDs derived from the
        source SOP Instance UID, ``"seg"`` and ``algorithm_version``.
    """
    check_source(source, result)
    header = evidence_header(source)
    algorithm = AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version,
        source=cxr_codes.MANUFACTURER,
    )
    descriptions = [
        _describe(
            SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=concept,
                algorithm_type=SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=derive_uid(source.SOPInstanceUID, f"{KIND}:{label}", algorithm_version),
                tracking_id=label.lower(),
                display_color=color,
            )
        )
        for number, (label, concept, color) in enumerate(SEGMENTS, start=1)
    ]
    right, left = np.asarray(result.right_lung, dtype=bool), np.asarray(result.left_lung, dtype=bool)
    if np.logical_and(right, left).any():
        masks = np.stack([right, left], axis=-1)[None]  # (frames=1, rows, columns, segments=2)
    else:
        # Lungs apart, as they should be: the same SEG from a label map (0, 1 right,
        # 2 left), which highdicom checks in a tenth of the time of the stack.
        masks = (right.view(np.uint8) + 2 * left.view(np.uint8))[None]  # (frames=1, rows, columns)
    sop_instance_uid = derive_uid(source.SOPInstanceUID, KIND, algorithm_version)
    seg = Segmentation(
        source_images=[header],
        pixel_array=masks,
        segmentation_type=SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derive_series_uid(source.StudyInstanceUID, KIND, algorithm_version),
        series_number=series_number(KIND),
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number(source),
        manufacturer=cxr_codes.MANUFACTURER,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number=algorithm_version,
        series_description=SERIES_DESCRIPTION,
        content_label="LUNGS",
        content_description=f"Lungs by {algorithm_name} {algorithm_version}",
        pixel_measures=_pixel_measures(result),
        omit_empty_frames=False,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm_equipment(algorithm_name, algorithm_version)],
    )
    if "FrameOfReferenceUID" not in seg:
        # General Image Module (PS3.3 C.7.6.1): Patient Orientation is Type 2C
        # when there is no Image Plane Module, as for a projection image.
        seg.PatientOrientation = list(patient_orientation(source))
    logger.info(
        "built SEG %s for source %s (%s %s)",
        sop_instance_uid,
        source.SOPInstanceUID,
        algorithm_name,
        algorithm_version,
    )
    return seg
