"""The full-size shortcuts of the preprocessing give the numbers of the plain computation."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from models.preprocessing import (
    _resize,
    _through_luts,
    _upsample_nonzero,
    display_uint8,
    normalize,
    preprocess,
)

# Windows, VOI LUT sequences, Modality LUT sequences, signed CT with a rescale, a 12-bit CR.
LUT_CASES = ["vlut_04.dcm", "mlut_18.dcm", "CT_small.dcm", "MR_small.dcm", "RG1_UNCR.dcm", "liver_1frame.dcm"]


@pytest.mark.parametrize("name", LUT_CASES)
def test_lut_table_equals_pydicom_on_the_whole_image(name: str) -> None:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not installed here")
    ds = dcmread(path)
    arr = ds.pixel_array
    plain = np.asarray(apply_voi_lut(apply_modality_lut(arr, ds), ds, index=0), dtype=np.float32)
    tiled = np.tile(arr, (2, 2)) if arr.size < 1 << 16 else arr  # large enough for the table path
    expected = np.tile(plain, (2, 2)) if arr.size < 1 << 16 else plain
    np.testing.assert_array_equal(_through_luts(tiled, ds), expected)


def test_sparse_upsampling_keeps_masks_and_heat() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        small = np.zeros((int(rng.integers(120, 256)), int(rng.integers(120, 256))), np.float32)
        r0, c0 = int(rng.integers(0, 60)), int(rng.integers(0, 60))
        small[r0 : r0 + 50, c0 : c0 + 40] = 1.0
        small[r0 + 10 : r0 + 30, c0 + 5 : c0 + 25] = rng.random((20, 20)).astype(np.float32)
        shape = (int(small.shape[0] * rng.uniform(1.5, 11)), int(small.shape[1] * rng.uniform(1.5, 11)))
        out = np.zeros(shape, np.float32)
        _upsample_nonzero(small, out)
        whole = _resize(small, shape)
        np.testing.assert_allclose(out, whole, atol=1e-4)
        binary = (small > 0.5).astype(np.float32)
        out[...] = 0
        _upsample_nonzero(binary, out)
        assert ((out > 0.5) != (_resize(binary, shape) > 0.5)).sum() <= 0.0001 * out.size


def test_normalised_once_is_the_same_square_and_display() -> None:
    pixels = np.random.default_rng(1).normal(2000, 400, (600, 500)).astype(np.float32)
    norm = normalize(pixels)
    square, geometry = preprocess(pixels, 256)
    again, same = preprocess(pixels, 256, normalized=norm)
    np.testing.assert_array_equal(square, again)
    assert geometry == same
    np.testing.assert_array_equal(display_uint8(pixels), display_uint8(pixels, normalized=norm))
