"""Image loading and preprocessing: DICOM LUTs, MONOCHROME1, PNG/JPEG, errors, geometry."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from models.exceptions import ImageError
from models.preprocessing import crop_box, load_image, preprocess


def test_monochrome1_is_inverted(cr_chest_dicom: Path) -> None:
    ds = pydicom.dcmread(cr_chest_dicom)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    loaded = load_image(ds)
    raw = ds.pixel_array.astype(np.float64)
    assert loaded.pixels.shape == raw.shape and loaded.pixels.dtype == np.float32
    assert np.corrcoef(raw.ravel()[::97], loaded.pixels.ravel()[::97])[0, 1] < -0.9


def test_dicom_path_and_dataset_agree(cr_chest_dicom: Path) -> None:
    a = load_image(cr_chest_dicom)
    b = load_image(pydicom.dcmread(cr_chest_dicom))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.source == str(cr_chest_dicom)
    assert a.pixel_spacing_mm is None  # PixelSpacing 0\0 in this file: treated as unknown


def test_pixel_spacing_read(cr_chest_dicom: Path) -> None:
    ds = pydicom.dcmread(cr_chest_dicom)
    ds.PixelSpacing = [0.2, 0.25]
    assert load_image(ds).pixel_spacing_mm == (0.2, 0.25)
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.15, 0.15]
    assert load_image(ds).pixel_spacing_mm == (0.15, 0.15)


def test_png_and_jpeg(png_path: Path, jpeg_path: Path) -> None:
    for p in (png_path, jpeg_path):
        loaded = load_image(p)
        assert loaded.pixels.ndim == 2 and loaded.pixel_spacing_mm is None


def test_unreadable_inputs_raise_image_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="x.jpg"):
        load_image(bad)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "missing.png")
    dcm = tmp_path / "bad.dcm"
    dcm.write_bytes(b"\0" * 128 + b"DICM" + b"\1\2\3")
    with pytest.raises(ImageError, match="bad.dcm"):
        load_image(dcm)


def test_black_border_and_text_margin_cropped() -> None:
    rng = np.random.default_rng(0)
    img = np.zeros((300, 400), np.float32)
    img[40:260, 60:360] = rng.uniform(0.2, 1.0, (220, 300))
    r0, r1, c0, c1 = crop_box(img)
    assert (r0, r1, c0, c1) == (40, 260, 60, 360)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_a_constant_margin_goes_whatever_its_width(value: float) -> None:
    """Padding or a shutter (constant lines, black or white) wider than the 20 % that dark or
    uniform lines may take: removed all the same, and the film inside is cropped as on its own."""
    rng = np.random.default_rng(0)
    film = np.zeros((300, 400), np.float32)
    film[20:290, 30:380] = rng.uniform(0.2, 1.0, (270, 350))
    padded = np.pad(film, ((150, 120), (200, 160)), constant_values=value)
    r0, r1, c0, c1 = crop_box(film)
    assert crop_box(padded) == (150 + r0, 150 + r1, 200 + c0, 200 + c1)


@pytest.mark.parametrize("shape", ["staircase", "dot"])
def test_constant_margins_leave_a_fifth_of_the_whole_image(shape: str) -> None:
    """Content that shrinks each time its constant lines go (a staircase: every row and column
    has one constant line more than the last) or a single bright dot: the box keeps at least a
    fifth of each side of the whole image, and is found at once (it once recursed line by line,
    to a 1-pixel box, and at 1500 px past Python's recursion limit)."""
    n = 1500
    if shape == "staircase":
        img = np.triu(np.ones((n, n), np.float32))
    else:
        img = np.zeros((n, n), np.float32)
        img[700, 800] = 1.0
    r0, r1, c0, c1 = crop_box(img)
    assert r1 - r0 >= n / 5 and c1 - c0 >= n / 5


def test_a_uniform_bright_margin_takes_at_most_a_fifth() -> None:
    """Uniform but not constant lines (a bright abdomen under the lungs) go only up to the limit."""
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 1.0, (400, 300)).astype(np.float32)
    img[200:] = 0.9 + rng.uniform(-0.03, 0.03, (200, 300))  # std 0.017: uniform, not constant
    assert crop_box(img) == (0, 320, 0, 300)


def test_preprocess_range_and_geometry_round_trip() -> None:
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 4095, (300, 200)).astype(np.float32)
    square, geom = preprocess(img, 128)
    assert square.shape == (128, 128)
    assert square.min() >= -1024 and square.max() <= 1024
    mask = np.zeros((128, 128), np.float32)
    mask[32:96, 32:96] = 1
    back = geom.to_input(mask, nearest=True)
    assert back.shape == img.shape and 0 < back.mean() < 1


@pytest.mark.parametrize("value", [0, 32767, 65535])
def test_a_film_at_a_third_of_its_frame_is_read_as_the_film(cr_chest_dicom: Path, value: int) -> None:
    """The real CR at a third of its size in the middle of a constant frame of the CR's size
    (found by a black-box review: white, its outline ran over the abdomen and heart and passed
    the check): the content box is the film."""
    from models.preprocessing import crop_box, normalize

    pixels = load_image(cr_chest_dicom).pixels
    rows, cols = pixels.shape
    small = np.asarray(Image.fromarray(pixels).resize((cols // 3, rows // 3), Image.Resampling.BOX))
    framed = np.full_like(pixels, value)
    framed[rows // 3 : rows // 3 + small.shape[0], cols // 3 : cols // 3 + small.shape[1]] = small
    r0, r1, c0, c1 = crop_box(normalize(framed))
    assert abs(r0 - rows // 3) <= 2 and abs(c0 - cols // 3) <= 2
    assert abs(r1 - r0 - small.shape[0]) <= 4 and abs(c1 - c0 - small.shape[1]) <= 4


@pytest.mark.parametrize("value", [0, 32767, 65535])
def test_a_framed_film_is_read_as_the_film(cr_chest_dicom: Path, value: int) -> None:
    """The real CR pasted into a frame of constant value (padding, black, or the 16-bit maximum):
    the square the models see is the film's own. The frame used to count in the grey scaling: a
    65535 frame squeezed the film's greys (extent 5.1 against 4.3)."""
    from models.preprocessing import model_square

    pixels = load_image(cr_chest_dicom).pixels
    framed = np.pad(pixels, 300, constant_values=value)
    alone, _ = model_square(pixels, 256)
    inside, _ = model_square(framed, 256)
    assert np.abs(alone.astype(int) - inside.astype(int)).mean() < 1.0  # grey levels, of 255


def test_of_several_windows_the_widest_is_read(cr_chest_dicom: Path) -> None:
    """Windows are alternative views (PS3.3 C.11.2.1.2); a narrow preset listed first clipped
    what the models saw (extent 2.3 against 4.3). The widest is read, in either order."""
    ds = pydicom.dcmread(cr_chest_dicom)
    ds.WindowCenter, ds.WindowWidth = 15000, 30000
    wide = load_image(ds).pixels
    for centers, widths in (([10000, 15000], [8000, 30000]), ([15000, 10000], [30000, 8000])):
        ds.WindowCenter, ds.WindowWidth = centers, widths
        np.testing.assert_array_equal(load_image(ds).pixels, wide)
    ds.WindowCenter, ds.WindowWidth = 10000, 8000
    assert not np.array_equal(load_image(ds).pixels, wide)  # one narrow window is still applied
    # More widths than centres: only pairs count (the widest unpaired width raised IndexError).
    ds.WindowCenter, ds.WindowWidth = [15000, 10000], [30000, 8000, 40000]
    np.testing.assert_array_equal(load_image(ds).pixels, wide)


def test_an_8_bit_voi_lut_on_a_12_bit_film_looks_up_every_value(cr_chest_dicom: Path) -> None:
    """An 8-bit VOI LUT over 12-bit stored values (PS3.3 C.11.2.1.1) is legal; pydicom 3.0 indexed
    the table in uint8, so every value of 256 or more wrapped around and the film came out as
    noise (the quality check: "no radiographic structure"). Each value now looks up its entry:
    the same film as through the equivalent 12-bit table."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(cr_chest_dicom)
    for kw in ("WindowCenter", "WindowWidth"):
        if kw in ds:
            delattr(ds, kw)
    hi = int(ds.pixel_array.max())
    values = np.arange(hi + 1)

    def with_lut(bits: int, words: bool = False) -> np.ndarray:
        item = Dataset()
        item.LUTDescriptor = [hi + 1, 0, bits]
        table = values * (2**bits - 1) // hi
        if words:  # OW, as an implicit VR file holds it
            item.add_new("LUTData", "OW", table.astype("<u2").tobytes())
        else:
            item.LUTData = [int(v) for v in table]
        ds.VOILUTSequence = Sequence([item])
        return load_image(ds).pixels

    eight, twelve = with_lut(8), with_lut(12)
    # As a file: implicit VR, where pydicom reads the table as OW bytes (every received film)
    with_lut(8, words=True)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    from_file = load_image(pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)).pixels
    np.testing.assert_array_equal(from_file, eight)
    assert hi >= 1024
    expected = (ds.pixel_array.astype(np.int64) * 255 // hi).astype(np.float32)
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        expected = expected.max() + expected.min() - expected
    np.testing.assert_array_equal(eight, expected)
    assert np.corrcoef(eight.ravel(), twelve.ravel())[0, 1] > 0.999


def test_detector_spacing_is_corrected_by_the_magnification_factor(cr_chest_dicom: Path) -> None:
    """Imager Pixel Spacing is at the detector; with an Estimated Radiographic Magnification
    Factor the spacing in the patient is the detector's divided by it (PS3.3 10.7.1.1). Pixel
    Spacing, already in the patient, is taken as given."""
    ds = pydicom.dcmread(cr_chest_dicom)
    del ds.PixelSpacing
    ds.ImagerPixelSpacing = [0.139, 0.139]
    assert load_image(ds).pixel_spacing_mm == pytest.approx((0.139, 0.139))
    ds.EstimatedRadiographicMagnificationFactor = 1.15
    assert load_image(ds).pixel_spacing_mm == pytest.approx((0.139 / 1.15, 0.139 / 1.15))
    ds.PixelSpacing = [0.12, 0.12]
    assert load_image(ds).pixel_spacing_mm == pytest.approx((0.12, 0.12))


@pytest.mark.parametrize(
    ("center", "width"), [(12000, 10), (12000, 2), (12000, 2000), (60000, 4000), (-5000, 100)]
)
def test_a_window_that_is_no_view_of_the_film_is_not_read(
    cr_chest_dicom: Path, center: int, width: int
) -> None:
    """A header's only window of width 10 or 2 (or beside the film's values) turned a normal film
    black and white (COVID-19 0.36, urgent; without it normal 0.62) or blank (found by a
    black-box review): the film is read as without a window."""
    ds = pydicom.dcmread(cr_chest_dicom)
    del ds.WindowCenter, ds.WindowWidth
    plain = load_image(ds).pixels
    ds.WindowCenter, ds.WindowWidth = center, width
    np.testing.assert_array_equal(load_image(ds).pixels, plain)
    ds.WindowCenter, ds.WindowWidth = 12000, 4000  # a fifth of its range: a view, applied
    assert not np.array_equal(load_image(ds).pixels, plain)
