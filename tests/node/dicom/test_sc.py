"""Secondary Capture with the burned-in heatmap, outlines and legend."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.exceptions import ResultMismatchError
from node.dicom.sc import (
    OUTLINE_RGB,
    WARNING_RGB,
    build_sc,
    fit_to_size,
    footer_lines,
    has_window,
    header_lines,
    legend_lines,
    lung_window,
    outline_width,
    render,
)
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result, roundtrip


@pytest.fixture(scope="module")
def sc(outputs: dict[str, Dataset]) -> Dataset:
    return roundtrip(outputs["sc"])


@pytest.fixture(scope="module")
def shown(result: AnalysisResult) -> AnalysisResult:
    """The result at the SC's size (a small film is upscaled: room for the legend)."""
    return fit_to_size(result, 0)


def test_header(any_source: Dataset, sc: Dataset, shown: AnalysisResult) -> None:
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    assert sc.BurnedInAnnotation == "YES"
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert sc.PhotometricInterpretation == "RGB"
    assert (sc.Rows, sc.Columns, sc.SamplesPerPixel) == (*shown.image.shape, 3)
    assert min(sc.Rows, sc.Columns) >= min(any_source.Rows, any_source.Columns, 512)
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


def test_heatmap_changes_pixels_where_high(sc: Dataset, shown: AnalysisResult) -> None:
    result = shown
    pixels = sc.pixel_array
    grey = result.image
    row, col = np.unravel_index(np.argmax(result.heatmap), result.heatmap.shape)
    assert result.heatmap[row, col] > 0.99
    r, g, b = (int(v) for v in pixels[row, col])
    assert not r == g == b, "colour expected where the heatmap is high"
    assert r > b  # jet: red at the top of the scale
    # Far from the heatmap, the lungs and the legend the X-ray is left grey.
    far = (result.image.shape[0] // 2, result.image.shape[1] - 2)
    assert result.heatmap[far] < 1e-3
    assert tuple(pixels[far]) == (grey[far],) * 3


def _is_outline(pixels: np.ndarray) -> np.ndarray:
    return (pixels == OUTLINE_RGB).all(axis=-1)


def test_lung_outline_drawn(sc: Dataset, shown: AnalysisResult) -> None:
    result = shown
    pixels = sc.pixel_array
    width = outline_width(sc.Rows, sc.Columns)
    for mask in (result.right_lung, result.left_lung):
        rows = np.nonzero(mask.any(axis=1))[0]
        middle = (rows[0] + rows[-1]) // 2
        cols = np.nonzero(mask[middle])[0]
        # The outline (green) runs along the outermost lung pixels of that row...
        for col in (cols[0], cols[-1]):
            assert _is_outline(pixels[middle, col - width : col + width + 1]).any(), (middle, col)
        # ...and not through the middle of the lung.
        assert not _is_outline(pixels[middle, (cols[0] + cols[-1]) // 2]).any()


def test_outline_closed_at_image_edge(dx_source: Dataset) -> None:
    """A mask that runs to the edge of the image is outlined along that edge too."""
    result = make_result(dx_source)
    result.right_lung[:, :40] = False
    result.right_lung[100:200, :40] = True  # past the chest wall, to the border
    pixels = render(result, ALGORITHM_NAME, ALGORITHM_VERSION)
    assert _is_outline(pixels[120:180, 0]).all()
    assert not _is_outline(pixels[120:180, 20]).any()


def _text_heights(region: np.ndarray, colour: tuple[int, int, int], tolerance: int = 20) -> list[int]:
    """Heights of the runs of rows holding pixels of one text colour (one run per text line)."""
    rows = (np.abs(region.astype(int) - colour) <= tolerance).all(axis=-1).any(axis=1)
    heights, run = [], 0
    for has_text in rows:
        if has_text:
            run += 1
        elif run:
            heights.append(run)
            run = 0
    return heights + ([run] if run else [])


def test_text_legible_at_fit_to_window(cr_source: Dataset) -> None:
    """A ~2000-row CR shown 1000 pixels tall: text still about 12+ screen pixels tall."""
    result = make_result(cr_source)
    pixels = render(result, ALGORITHM_NAME, ALGORITHM_VERSION)
    rows, columns = pixels.shape[:2]
    assert rows > 1500
    shown = 1000 / rows  # screen pixels per image pixel
    header = pixels[: rows // 6, : columns // 2]
    warning = _text_heights(header, WARNING_RGB)  # "NOT FOR DIAGNOSTIC USE", capitals
    assert len(warning) == 1 and warning[0] * shown >= 12, warning
    footer = pixels[-rows // 5 :, : columns * 9 // 10]
    lines = _text_heights(footer, (255, 255, 255))
    assert len(lines) == len(footer_lines(result, ALGORITHM_NAME, ALGORITHM_VERSION)), lines
    assert min(lines) * shown >= 9, lines


def test_not_for_diagnostic_use_burned_in(sc: Dataset) -> None:
    pixels = sc.pixel_array
    header = pixels[: sc.Rows // 5, : sc.Columns * 9 // 10]
    # Small text is anti-aliased: yellow-ish, never grey (the source) or white (the rest).
    assert len(_text_heights(header, WARNING_RGB, tolerance=70)) == 1, "one warning line (yellow) expected"


def test_legend_burned_in_top_left(sc: Dataset, result: AnalysisResult) -> None:
    pixels = sc.pixel_array.astype(int)
    corner = pixels[: sc.Rows // 6, : sc.Columns // 2]
    white = (corner >= 200).all(axis=-1)
    black = (corner == 0).all(axis=-1)
    assert white.sum() > 20 and black.sum() > 20, "light legend text on a dark box expected"
    # The source image there is a mid-grey ramp, never that light or that dark.
    grey = result.image[: sc.Rows // 6, : sc.Columns // 2]
    assert grey.min() > 0 and grey.max() < 200


def test_legend_text_has_result_and_no_patient_data(any_source: Dataset, result: AnalysisResult) -> None:
    lines = legend_lines(result, ALGORITHM_NAME, ALGORITHM_VERSION)
    text = "\n".join(lines)
    assert lines[0] == "NOT FOR DIAGNOSTIC USE"
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


def test_lung_window_spans_the_chest() -> None:
    """Darkest lung grey to 0, brightest chest grey to 255; outside the chest clipped."""
    image = np.full((200, 200), 10, dtype=np.uint8)  # background, darker than the lungs
    image[40:160, 20:180] = 150  # mediastinum, heart
    lungs = np.zeros((200, 200), dtype=bool)
    lungs[50:150, 30:90] = lungs[50:150, 110:170] = True
    image[lungs] = np.tile(np.linspace(90, 120, 60).astype(np.uint8), (100, 2)).ravel()
    out = lung_window(image, [lungs])
    assert out[lungs].min() == 0 and out[100, 100] == 255
    assert out[5, 5] == 0  # the background below the window
    assert np.unique(out[lungs]).size == np.unique(image[lungs]).size  # lung detail kept
    # No lungs, or no contrast: unchanged.
    assert (lung_window(image, [np.zeros_like(lungs)]) == image).all()
    flat = np.full((200, 200), 100, dtype=np.uint8)
    assert (lung_window(flat, [lungs]) == flat).all()


def test_sc_window_from_lungs_only_without_the_sources(dx_source: Dataset) -> None:
    """The source's window (VOI LUT or Window Center/Width) wins; without one, the lungs'."""
    assert has_window(dx_source)
    bare = copy.deepcopy(dx_source)
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence"):
        if keyword in bare:
            delattr(bare, keyword)
    assert not has_window(bare)
    result = make_result(dx_source)
    result.heatmap = np.zeros_like(result.heatmap)  # grey only
    plain = build_sc(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION).pixel_array[..., 0]
    windowed = build_sc(bare, result, ALGORITHM_NAME, ALGORITHM_VERSION).pixel_array[..., 0]
    shown = fit_to_size(result, 0)
    lungs = shown.right_lung & ~shown.left_lung
    lungs[: lungs.shape[0] // 3] = False  # below the legend
    spread = lambda grey: np.ptp(np.percentile(grey[lungs], [5, 95]))  # noqa: E731
    assert spread(windowed) > 1.5 * spread(plain)


def test_header_lines_stay_short_whatever_the_check_says(cr_source: Dataset) -> None:
    """The header's font shrinks until its widest line fits: the quality check's whole
    description of several reasons ("lungs not in chest position (film turned or not a chest
    PA/AP); ...") made it a third of the footer's. The SC gives the first reason in a few words
    (the SR codes every one), and the triage banner names metrics in words, not raw codes."""
    from models.quality import REASONS
    from models.result import CaseContext, Quality, Triage

    result = make_result(cr_source)
    passing = max(len(line) for line in header_lines(result))
    for reasons in [(r,) for r in REASONS] + [tuple(REASONS)]:
        result.quality = Quality(False, True, reasons, "; ".join(REASONS[r] for r in reasons))
        lines = header_lines(result)
        assert max(len(line) for line in lines) <= passing + 16, lines
    rule = "covid19 >= 0.07 or extent >= 4"
    result.quality = make_result(cr_source).quality
    result.context = CaseContext(
        triage=Triage(urgent=True, reasons=("covid19 0.23 >= 0.07", "extent 4.30 >= 4"), rule=rule)
    )
    assert header_lines(result)[-1] == "URGENT (triage rule): COVID-19 p 0.23, extent 4.30"
