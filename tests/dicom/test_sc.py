"""Secondary Capture with the burned-in heatmap, outlines and legend."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.exceptions import ResultMismatchError
from node.dicom.sc import build_sc, legend_lines, render
from tests.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result, roundtrip


@pytest.fixture(scope="module")
def sc(outputs: dict[str, Dataset]) -> Dataset:
    return roundtrip(outputs["sc"])


def test_header(any_source: Dataset, sc: Dataset) -> None:
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.BurnedInAnnotation == "YES"
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert sc.PhotometricInterpretation == "RGB"
    assert (sc.Rows, sc.Columns, sc.SamplesPerPixel) == (any_source.Rows, any_source.Columns, 3)
    assert sc.BodyPartExamined == any_source.BodyPartExamined


def test_source_image_sequence(any_source: Dataset, sc: Dataset) -> None:
    [item] = sc.SourceImageSequence
    assert item.ReferencedSOPInstanceUID == any_source.SOPInstanceUID
    assert item.ReferencedSOPClassUID == any_source.SOPClassUID
    assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"


def test_lossy_source_keeps_lossy_flag(any_source: Dataset, sc: Dataset) -> None:
    if any_source.get("LossyImageCompression") == "01":
        assert sc.LossyImageCompression == "01"
    else:
        assert sc.get("LossyImageCompression") != "01"


def test_heatmap_changes_pixels_where_high(sc: Dataset, result: AnalysisResult) -> None:
    pixels = sc.pixel_array
    grey = result.image
    row, col = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert result.heatmap[row, col] > 0.99
    r, g, b = (int(v) for v in pixels[row, col])
    assert not r == g == b, "colour expected where the heatmap is high"
    assert r > b  # jet: red at the top of the scale
    # Far from the heatmap, the lungs and the legend the X-ray is left grey.
    far = (result.image.shape[0] - 2, result.image.shape[1] // 2)
    assert result.heatmap[far] < 1e-3
    assert tuple(pixels[far]) == (grey[far],) * 3


def test_lung_outline_drawn(sc: Dataset, result: AnalysisResult) -> None:
    pixels = sc.pixel_array
    rows = np.nonzero(result.left_lung.any(axis=1))[0]
    middle = (rows[0] + rows[-1]) // 2
    cols = np.nonzero(result.left_lung[middle])[0]
    # The outermost lung pixel on that row is on the outline (green).
    assert tuple(pixels[middle, cols[-1]]) == (0, 255, 0)


def test_legend_burned_in_top_left(sc: Dataset, result: AnalysisResult) -> None:
    pixels = sc.pixel_array.astype(int)
    corner = pixels[: sc.Rows // 12, : sc.Columns // 4]
    white = (corner >= 200).all(axis=-1)
    black = (corner == 0).all(axis=-1)
    assert white.sum() > 20 and black.sum() > 20, "light legend text on a dark box expected"
    # The source image there is a mid-grey ramp, never that light or that dark.
    grey = result.image[: sc.Rows // 12, : sc.Columns // 4]
    assert grey.min() > 0 and grey.max() < 200


def test_legend_text_has_result_and_no_patient_data(any_source: Dataset, result: AnalysisResult) -> None:
    lines = legend_lines(result, ALGORITHM_NAME, ALGORITHM_VERSION)
    text = "\n".join(lines)
    assert "COVID-19 (p = 0.91)" in text
    assert f"{ALGORITHM_NAME} {ALGORITHM_VERSION}" in text
    assert "extent 5.2/8" in text and "opacity 3.5/6" in text
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        value = str(any_source.get(keyword, "")).strip()
        for part in filter(None, value.replace("^", " ").split()):
            assert part not in text, keyword


def test_render_is_deterministic(dx_source: Dataset) -> None:
    result = make_result(dx_source)
    first = render(result, ALGORITHM_NAME, ALGORITHM_VERSION)
    assert first.dtype == np.uint8 and first.shape == (*result.image.shape, 3)
    assert (first == render(result, ALGORITHM_NAME, ALGORITHM_VERSION)).all()


def test_shape_mismatch_names_the_array(dx_source: Dataset) -> None:
    result = make_result(dx_source)
    result.heatmap = result.heatmap[:-1]
    with pytest.raises(ResultMismatchError, match="heatmap"):
        build_sc(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)
