"""``Analyzer.analyze`` follows the contract in models/result.py for DICOM, PNG and JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.preprocessing import LoadedImage, load_image
from models.result import CLASSES, AnalysisResult


def _check(res: AnalysisResult, shape: tuple[int, int]) -> None:
    assert tuple(res.classification) == CLASSES
    assert abs(sum(res.classification.values()) - 1.0) < 1e-4
    assert all(0.0 <= p <= 1.0 for p in res.classification.values())
    s = res.severity
    assert 0 <= s.geographic_extent <= 8 and 0 <= s.opacity <= 6
    for lung in (s.right, s.left):
        assert 0 <= lung.extent <= 4 and 0 <= lung.opacity <= 3
    for m in (res.right_lung, res.left_lung):
        assert m.shape == shape and m.dtype == bool
    assert res.right_lung.any() and res.left_lung.any()
    assert res.heatmap.shape == shape and res.heatmap.dtype == np.float32
    assert res.heatmap.min() >= 0.0 and res.heatmap.max() <= 1.0
    assert res.heatmap.std() > 1e-3  # not constant
    assert res.image.shape == shape and res.image.dtype == np.uint8
    assert set(res.models) >= {"segmentation", "classification", "severity"}
    assert all("@" in v for v in res.models.values())
    js = res.severity.as_json()
    assert set(js) == {"geographic_extent", "opacity", "right", "left"}
    assert set(res.lungs_json()) == {"right_area_cm2", "left_area_cm2", "mask_fraction"}


def test_dicom_monochrome1_jpeg2000(analyzer, cr_chest_dicom: Path) -> None:
    loaded = load_image(cr_chest_dicom)
    res = analyzer.analyze(loaded)
    _check(res, loaded.pixels.shape)
    # The patient's right lung is on the image's left.
    cols = np.arange(loaded.pixels.shape[1])
    assert cols[res.right_lung.any(0)].mean() < cols[res.left_lung.any(0)].mean()


def test_png(analyzer, png_path: Path) -> None:
    loaded = load_image(png_path)
    _check(analyzer.analyze(loaded), loaded.pixels.shape)


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_jpeg_each_heatmap(analyzer, jpeg_path: Path, method: str) -> None:
    loaded = load_image(jpeg_path)
    res = analyzer.analyze(loaded, heatmap=method)
    _check(res, loaded.pixels.shape)
    assert res.heatmap_method == method


def test_lung_area_with_spacing(analyzer, cr_chest_dicom: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(cr_chest_dicom)
    ds.PixelSpacing = [0.2, 0.2]
    res = analyzer.analyze(load_image(ds))
    lungs = res.lungs_json()
    assert lungs["right_area_cm2"] > 10 and lungs["left_area_cm2"] > 10


def test_unknown_heatmap_rejected(analyzer, jpeg_path: Path) -> None:
    with pytest.raises(ValueError, match="heatmap"):
        analyzer.analyze(load_image(jpeg_path), heatmap="nope")


def test_get_analyzer_is_cached() -> None:
    from models.inference import get_analyzer

    assert get_analyzer() is get_analyzer()


def test_per_lung_scores_are_learned_and_add_up(analyzer, jpeg_path: Path) -> None:
    s = analyzer.analyze(load_image(jpeg_path)).severity
    assert s.right.extent + s.left.extent == pytest.approx(s.geographic_extent, abs=1e-6)
    assert s.right.opacity + s.left.opacity == pytest.approx(s.opacity, abs=1e-6)


def test_heatmap_stays_on_the_lung_crop(analyzer, heldout_slice) -> None:
    """Grad-CAM comes from the lung crop: no heat at the image's borders, where text and markers sit."""
    from .conftest import DATA_DIR

    for row in heldout_slice[:3]:
        res = analyzer.analyze(load_image(DATA_DIR / row["image"]))
        lungs = res.right_lung | res.left_lung
        rows, cols = np.nonzero(lungs.any(1))[0], np.nonzero(lungs.any(0))[0]
        heat = res.heatmap.copy()
        pad = max(lungs.shape) // 5
        heat[max(rows[0] - pad, 0) : rows[-1] + pad, max(cols[0] - pad, 0) : cols[-1] + pad] = 0
        assert heat.max() == 0.0


@pytest.mark.parametrize(("orientation", "axis"), [(("R", "F"), 1), (("L", "H"), 0)])
def test_a_film_stored_mirrored_or_upside_down_is_read_by_its_header(
    analyzer, cr_chest_dicom: Path, orientation: tuple[str, str], axis: int
) -> None:
    """The same film stored mirrored (Patient Orientation R\\F) or upside down (L\\H): its
    lungs and scores are the patient's own, not swapped, in the stored pixels' frame."""
    import pydicom

    ds = pydicom.dcmread(cr_chest_dicom)
    usual = analyzer.analyze(load_image(ds))
    ds.PixelData = np.ascontiguousarray(np.flip(ds.pixel_array, axis)).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.PatientOrientation = list(orientation)
    stored = analyzer.analyze(load_image(ds))
    assert stored.quality.assessable
    for lung in ("right", "left"):
        assert getattr(stored.severity, lung).extent == pytest.approx(
            getattr(usual.severity, lung).extent, abs=0.15
        )
    for flipped, own in ((stored.right_lung, usual.right_lung), (stored.left_lung, usual.left_lung)):
        back = np.flip(flipped, axis)
        assert 2 * (back & own).sum() / (back.sum() + own.sum()) > 0.97  # the same lung, same place
    if axis == 1:  # mirrored: the patient's right lung is now on the image's right
        cols = np.arange(stored.right_lung.shape[1])
        assert cols[stored.right_lung.any(0)].mean() > cols[stored.left_lung.any(0)].mean()


@pytest.mark.parametrize("edge", ["black", "white"])
def test_a_film_inside_a_wide_constant_border_is_read_as_without_it(
    analyzer, cr_chest_dicom: Path, edge: str
) -> None:
    """The CR pasted into a frame twice its size (a quarter of each side constant): its outline
    passes the check and its scores stay near the film's own (they failed on shape before)."""
    loaded = load_image(cr_chest_dicom)
    pixels = loaded.pixels
    value = pixels.min() if edge == "black" else pixels.max()
    rows, cols = (s // 2 for s in pixels.shape)
    framed = np.pad(pixels, ((rows, rows), (cols, cols)), constant_values=value)
    own = analyzer.analyze(loaded)
    result = analyzer.analyze(LoadedImage(framed, None, "framed"))
    assert result.quality.assessable, result.quality.reasons
    assert result.severity.geographic_extent == pytest.approx(own.severity.geographic_extent, abs=0.6)
