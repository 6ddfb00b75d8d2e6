"""BINARY Segmentation of the right and left lungs on a projection image."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.exceptions import ResultMismatchError
from node.dicom.seg import build_seg
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result, roundtrip


@pytest.fixture(scope="module")
def seg(outputs: dict[str, Dataset]) -> Dataset:
    return roundtrip(outputs["seg"])


def test_header(seg: Dataset) -> None:
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert seg.SegmentationType == "BINARY"
    assert seg.Modality == "SEG"
    assert seg.NumberOfFrames == 2


def test_segments_are_right_and_left_lung(seg: Dataset) -> None:
    segments = {
        int(item.SegmentNumber): item.SegmentedPropertyTypeCodeSequence[0].CodeValue
        for item in seg.SegmentSequence
    }
    assert segments == {1: "3341006", 2: "44029006"}
    for item in seg.SegmentSequence:
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (ALGORITHM_NAME, ALGORITHM_VERSION)
        assert item.SegmentAlgorithmType == "AUTOMATIC"


def test_frames_equal_masks_and_reference_source(
    any_source: Dataset, seg: Dataset, result: AnalysisResult
) -> None:
    frames = seg.pixel_array.astype(bool)
    by_segment = {}
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        by_segment[number] = frames[index]
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == any_source.SOPInstanceUID
    assert np.array_equal(by_segment[1], result.right_lung)
    assert np.array_equal(by_segment[2], result.left_lung)


def test_projection_image_has_orientation_not_frame_of_reference(any_source: Dataset, seg: Dataset) -> None:
    assert "FrameOfReferenceUID" not in seg
    assert list(seg.PatientOrientation) == list(any_source.get("PatientOrientation") or ["L", "F"])


def test_pixel_spacing_from_result(seg: Dataset, result: AnalysisResult) -> None:
    assert result.pixel_spacing_mm is not None
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx(list(result.pixel_spacing_mm))


def test_mask_shape_mismatch_names_the_array(dx_source: Dataset) -> None:
    result = make_result(dx_source)
    result.left_lung = result.left_lung[:, :-3]
    with pytest.raises(ResultMismatchError, match="left_lung"):
        build_seg(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)
