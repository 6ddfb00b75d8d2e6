"""The SC at the size a viewer needs (``sc_max_size``), JPEG-LS lossless on request."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless

from node.dicom.outputs import build_outputs
from node.dicom.sc import MAX_UPSCALED_SIDE, MIN_SIDE, build_sc, fit_to_size
from node.settings import MIN_SC_SIZE, Settings
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result, roundtrip


def test_cr_downscaled_to_max_size_with_spacing_scaled(
    cr_source: Dataset, validate: Callable[[Dataset, str], list[str]]
) -> None:
    """1955 x 1841 at 0.16 mm -> 1024 on the long side; each axis's spacing by its own ratio."""
    result = make_result(cr_source)
    sc = roundtrip(build_sc(cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION, max_size=1024))
    rows, columns = int(cr_source.Rows), int(cr_source.Columns)
    assert max(sc.Rows, sc.Columns) == 1024
    assert (sc.Rows, sc.Columns) == (
        round(rows * 1024 / max(rows, columns)),
        round(columns * 1024 / max(rows, columns)),
    )
    spacing = [float(v) for v in sc.PixelSpacing]
    assert spacing[0] == pytest.approx(0.16 * rows / sc.Rows, rel=1e-6)
    assert spacing[1] == pytest.approx(0.16 * columns / sc.Columns, rel=1e-6)
    # The field of view stays the source's, and no detector spacing is left unscaled.
    assert sc.Rows * spacing[0] == pytest.approx(rows * 0.16, rel=1e-6)
    assert "ImagerPixelSpacing" not in sc
    assert sc.pixel_array.shape == (sc.Rows, sc.Columns, 3)
    assert validate(sc, "sc-1024") == []


def test_a_small_image_is_upscaled_and_zero_keeps_the_source_size(
    dx_source: Dataset, cr_source: Dataset
) -> None:
    """A film under MIN_SIDE (512) on its shorter side is upscaled to it: on a 192-px film the
    legend's lines were cut and covered most of the film (found by a black-box review)."""
    result = make_result(dx_source)
    rows, columns = int(dx_source.Rows), int(dx_source.Columns)
    assert min(rows, columns) < MIN_SIDE
    small = build_sc(dx_source, result, ALGORITHM_NAME, ALGORITHM_VERSION, max_size=2048)
    scale = MIN_SIDE / min(rows, columns)
    assert (small.Rows, small.Columns) == (round(rows * scale), round(columns * scale))
    assert result.pixel_spacing_mm is not None
    assert float(small.PixelSpacing[0]) == pytest.approx(result.pixel_spacing_mm[0] * rows / small.Rows)
    assert float(small.PixelSpacing[1]) == pytest.approx(result.pixel_spacing_mm[1] * columns / small.Columns)
    full = build_sc(cr_source, make_result(cr_source), ALGORITHM_NAME, ALGORITHM_VERSION, max_size=0)
    assert (full.Rows, full.Columns) == (cr_source.Rows, cr_source.Columns)


def test_downscaled_maps_follow_the_image(cr_source: Dataset) -> None:
    """Lungs and heat land where they were, at the new scale."""
    result = make_result(cr_source)
    small = fit_to_size(result, 512)
    assert small.image.shape == small.heatmap.shape == small.right_lung.shape == small.left_lung.shape
    scale = small.image.shape[0] / result.image.shape[0]
    assert small.right_lung.sum() == pytest.approx(result.right_lung.sum() * scale**2, rel=0.03)
    hot_small = np.argwhere(small.heatmap == small.heatmap.max()).mean(axis=0)
    hot_full = np.argwhere(result.heatmap == result.heatmap.max()).mean(axis=0) * scale
    assert np.abs(hot_small - hot_full).max() < 3
    assert small.pixel_spacing_mm is not None and result.pixel_spacing_mm is not None
    assert small.pixel_spacing_mm[0] > result.pixel_spacing_mm[0]


def test_jpeg_ls_lossless(cr_source: Dataset, validate: Callable[[Dataset, str], list[str]]) -> None:
    result = make_result(cr_source)
    plain = build_outputs(
        cr_source, result, ALGORITHM_NAME, ALGORITHM_VERSION, kinds=("sc",), sc_max_size=1024
    )
    packed = build_outputs(
        cr_source,
        result,
        ALGORITHM_NAME,
        ALGORITHM_VERSION,
        kinds=("sc",),
        sc_max_size=1024,
        sc_transfer_syntax_uid=JPEGLSLossless,
    )
    assert set(packed) == {"sc"}
    sc = roundtrip(packed["sc"])
    assert sc.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert len(sc.PixelData) < len(plain["sc"].PixelData) / 2
    np.testing.assert_array_equal(sc.pixel_array, plain["sc"].pixel_array)  # lossless
    assert validate(sc, "sc-jpeg-ls") == []


@pytest.mark.parametrize("value", [-1, 1, MIN_SC_SIZE - 1, "big"])
def test_sc_max_size_validated(value: object) -> None:
    with pytest.raises(ValidationError, match="sc_max_size"):
        Settings(sc_max_size=value)


def test_sc_settings_defaults_and_choices() -> None:
    assert Settings().sc_max_size == 2048 and Settings().sc_compression == "none"
    assert Settings(sc_max_size=0).sc_max_size == 0
    assert Settings(sc_compression="jpeg-ls").sc_compression == "jpeg-ls"
    with pytest.raises(ValidationError, match="sc_compression"):
        Settings(sc_compression="jpeg2000")


def test_an_elongated_image_is_upscaled_only_as_far_as_its_longer_side_allows(
    cr_source: Dataset,
) -> None:
    """A 100 x 20000 strip upscaled to 512 on its short side would have been 102400 rows, more
    than Rows (US) can hold (found by a code review)."""
    result = make_result(cr_source)
    strip = fit_to_size(dataclasses.replace(result, image=result.image[:100, :1500]), 0)
    assert strip.image.shape[1] <= MAX_UPSCALED_SIDE and strip.image.shape[0] < 512
    capped = fit_to_size(dataclasses.replace(result, image=result.image[:100, :1500]), 1024)
    assert capped.image.shape == (round(100 * 1024 / 1500), 1024)
