"""Image loading and the preprocessing shared by training and inference.

DICOM pixels go through the Modality LUT and VOI LUT (PS3.3 C.11.1, C.11.2),
MONOCHROME1 is inverted so that bright means dense, constant margins (padding,
shutters) whatever their width and black borders and burned-in text margins up to
a fifth of each side are cropped (Keidar et al.), CLAHE is optional, the image is
resized keeping its aspect ratio and padded to a square, and intensities are
scaled to [-1024, 1024] (Cohen et al.). PNG and JPEG take the same path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.exceptions import ImageError

logger = logging.getLogger(__name__)

INTENSITY_RANGE = 1024.0
# A window spanning less than 1/8 of the film's own grey range is no view of it (read without):
# width 16-20 of an 8-bit film's 255 still made a normal film urgent. Read without its window, a
# film is stretched over its own percentiles, as every training image was.
MIN_WINDOW_SHARE = 8


@dataclass
class LoadedImage:
    """A decoded image in display orientation (bright = dense).

    ``flips`` (up-down, left-right): how the pixels differ from a chest film's usual display,
    patient's right on the viewer's left and head at the top (Patient Orientation ``L\\F``), as
    the DICOM header says (:func:`header_flips`). The models read the film the usual way round and
    hand their maps back in the pixels' own frame, so a mirrored film's right lung stays the
    patient's right lung."""

    pixels: np.ndarray  # float32 (rows, cols)
    pixel_spacing_mm: tuple[float, float] | None
    source: str
    flips: tuple[bool, bool] = (False, False)

    def upright(self, image: np.ndarray) -> np.ndarray:
        """``image`` (in the pixels' frame) the usual way round; its own inverse."""
        up_down, left_right = self.flips
        out = image[::-1] if up_down else image
        return out[:, ::-1] if left_right else out


def header_flips(ds: Any) -> tuple[bool, bool]:
    """(up-down, left-right) from Patient Orientation (0020,0020): rows running towards the
    patient's right (``R``) are a mirrored film, columns running towards the head (``H``) an
    upside-down one. Anything else (absent, a lateral's ``A``/``P``, a film on its side) is left
    as it is; the quality check catches a film turned on its side, and about half of those upside
    down."""
    value = ds.get("PatientOrientation")
    if not value or len(value) != 2:
        return (False, False)
    rows, columns = (str(v).upper()[:1] for v in value)
    if rows not in ("L", "R") or columns not in ("F", "H"):
        return (False, False)
    return (columns == "H", rows == "R")


@dataclass(frozen=True)
class Geometry:
    """How a preprocessed square image maps back onto the input image."""

    shape: tuple[int, int]  # input (rows, cols)
    crop: tuple[int, int, int, int]  # r0, r1, c0, c1 in input pixels
    resized: tuple[int, int]  # (rows, cols) after resize, before padding
    offset: tuple[int, int]  # (top, left) padding
    size: int

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        """Where the image lies in the square (rows r0-r1, columns c0-c1; the rest is padding)."""
        top, left = self.offset
        return (top, top + self.resized[0], left, left + self.resized[1])

    def to_square(self, arr: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Map an input-resolution array (image or mask) onto the model square."""
        r0, r1, c0, c1 = self.crop
        sub = np.asarray(arr, dtype=np.float32)[r0:r1, c0:c1]
        res = _resize(sub, self.resized, nearest=nearest)
        out = np.zeros((self.size, self.size), dtype=np.float32)
        top, left = self.offset
        out[top : top + self.resized[0], left : left + self.resized[1]] = res
        return out

    def to_input(self, arr: np.ndarray, nearest: bool = False) -> np.ndarray:
        """Map a model-square array (any square size) back to input resolution."""
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape[0] != self.size:
            arr = _resize(arr, (self.size, self.size), nearest=nearest)
        top, left = self.offset
        sub = arr[top : top + self.resized[0], left : left + self.resized[1]]
        r0, r1, c0, c1 = self.crop
        out = np.zeros(self.shape, dtype=np.float32)
        if nearest:
            out[r0:r1, c0:c1] = _resize(sub, (r1 - r0, c1 - c0), nearest=True)
        else:
            _upsample_nonzero(sub, out[r0:r1, c0:c1])
        return out


def _upsample_nonzero(small: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = _resize(small, out.shape)``, computed only around ``small``'s non-zero part.

    Masks and heatmaps are zero outside the lungs or the lung crop, and a
    resampling filter of zeros is zero, so only the window of ``out`` that the
    non-zero part reaches is resampled (Pillow's ``box``: the same filter
    centres and weights as the whole resize). On a full-size DX (2800 x 2304)
    the mask of one lung takes a third of the time.
    """
    rows, cols = np.nonzero(small.any(axis=1))[0], np.nonzero(small.any(axis=0))[0]
    if not len(rows):
        return
    # Source pixels per output pixel on each axis, and how far a filter reaches
    # (Pillow widens the filter by the scale when shrinking).
    sy, sx = small.shape[0] / out.shape[0], small.shape[1] / out.shape[1]
    reach_y, reach_x = max(1.0, sy) * 3 + 1, max(1.0, sx) * 3 + 1  # BOX/BILINEAR reach 1, with margin
    y0 = max(0, int(np.floor((rows[0] - reach_y) / sy)))
    y1 = min(out.shape[0], int(np.ceil((rows[-1] + 1 + reach_y) / sy)))
    x0 = max(0, int(np.floor((cols[0] - reach_x) / sx)))
    x1 = min(out.shape[1], int(np.ceil((cols[-1] + 1 + reach_x) / sx)))
    if (y1 - y0) * (x1 - x0) > 0.8 * out.size:
        out[...] = _resize(small, out.shape)
        return
    img = Image.fromarray(small.astype(np.float32, copy=False))
    method = _method(small.shape, out.shape, nearest=False)
    box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    out[y0:y1, x0:x1] = np.asarray(img.resize((x1 - x0, y1 - y0), method, box=box), dtype=np.float32)


def _method(shape: tuple[int, ...], target: tuple[int, ...], nearest: bool) -> Image.Resampling:
    if nearest:
        return Image.Resampling.NEAREST
    if target[0] < shape[0] / 2 or target[1] < shape[1] / 2:
        return Image.Resampling.BOX  # area averaging when shrinking a lot
    return Image.Resampling.BILINEAR


def _resize(arr: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if arr.shape == tuple(shape):
        return arr.astype(np.float32, copy=False)
    img = Image.fromarray(arr.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), _method(arr.shape, shape, nearest)), dtype=np.float32)


def _spacing(ds: Any) -> tuple[float, float] | None:
    """PixelSpacing (PS3.3 C.7.6.2.1, in the patient) wins; else ImagerPixelSpacing (C.8.11.4,
    at the detector), divided by the Estimated Radiographic Magnification Factor (C.8.11.5)
    where the modality gives one, as PS3.3 10.7.1.1 says to correct it to the patient."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            row, col = float(value[0]), float(value[1])
            if row > 0 and col > 0:
                factor = _magnification(ds) if keyword == "ImagerPixelSpacing" else 1.0
                return (row / factor, col / factor)
    return None


def _magnification(ds: Any) -> float:
    """The Estimated Radiographic Magnification Factor, 1 where absent or implausible."""
    try:
        factor = float(ds.get("EstimatedRadiographicMagnificationFactor", 1.0) or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return factor if 1.0 <= factor <= 3.0 else 1.0


def _has_modality_lut(ds: Any) -> bool:
    """Whether the Modality LUT (PS3.3 C.11.1) changes any value: a LUT, or a rescale other than 1, 0.

    Without one, the VOI LUT sees the same numbers (pydicom converts to float64 either way).
    """
    if "ModalityLUTSequence" in ds:
        return True
    try:
        return (
            float(ds.get("RescaleSlope", 1) or 1) != 1.0 or float(ds.get("RescaleIntercept", 0) or 0) != 0.0
        )
    except (TypeError, ValueError):
        return True  # let pydicom judge a malformed value


def _windows(ds: Any) -> list[tuple[float, float]]:
    """The header's windows as (centre, width) pairs (a width without its centre is not a
    window); none where a VOI LUT Sequence is there (pydicom applies that first) or the values
    cannot be read (pydicom judges those)."""
    if "VOILUTSequence" in ds or "WindowWidth" not in ds or "WindowCenter" not in ds:
        return []
    try:
        widths = [float(w) for w in _values(ds["WindowWidth"].value)]
        centers = [float(c) for c in _values(ds["WindowCenter"].value)]
    except (TypeError, ValueError):
        return []
    return list(zip(centers, widths, strict=False))


def _widest_window(windows: list[tuple[float, float]]) -> int:
    """Which of several windows (PS3.3 C.11.2.1.2: alternative views; :func:`_windows`) the
    models read through: the widest, so a preset that clips the film (a bone or soft-tissue
    window listed first) does not change what the models see; after the window,
    :func:`normalize` stretches the film to its own range anyway. 0 where there is one or none."""
    return int(np.argmax([width for _, width in windows])) if len(windows) > 1 else 0


def _window_sees_the_film(ds: Any, window: tuple[float, float], sample: np.ndarray) -> bool:
    """Whether ``window`` (centre, width), the one the models would read through, spans at least
    1/:data:`MIN_WINDOW_SHARE` of the film's own grey range (``sample``'s 1st to 99th
    percentile, after the Modality LUT). A header's only window of width 2 or 10, or one beside
    the film's values, turned a normal film black and white (COVID-19 0.36, urgent; without
    it, normal 0.62) or blank: such a window is no view of the film, and the film is read
    without it."""
    center, width = window
    lo, hi = (float(v) for v in np.percentile(np.asarray(sample, np.float64), (1, 99)))
    seen = min(hi, center + width / 2) - max(lo, center - width / 2)
    if hi <= lo or seen * MIN_WINDOW_SHARE >= hi - lo:
        return True
    logger.warning(
        "%s: window %g/%g spans %.1f%% of the film's grey range (%g-%g); read without it",
        ds.get("SOPInstanceUID", "image"),
        center,
        width,
        100 * max(seen, 0.0) / (hi - lo),
        lo,
        hi,
    )
    return False


def _values(value: Any) -> list[Any]:
    """A DICOM element's value as a list (one value or several)."""
    from pydicom.multival import MultiValue

    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _wide_voi_lut(ds: Any) -> Any:
    """``ds``, or where its first VOI LUT has 8-bit entries, a dataset whose only VOI LUT is the
    same table declared 16-bit (same values).

    pydicom 3.0's ``apply_voi`` indexes an 8-bit table with an array of the table's own type
    (uint8), so a stored value of 256 or more wraps around: a 12-bit film through an 8-bit VOI
    LUT (legal, PS3.3 C.11.2.1.1) came out as noise. Declared 16-bit, the index is uint16 and
    each value looks up its own entry."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    seq = ds.get("VOILUTSequence")
    if not seq or "LUTDescriptor" not in seq[0] or "LUTData" not in seq[0]:
        return ds
    desc = [int(v) for v in _values(seq[0].LUTDescriptor)]
    data = seq[0]["LUTData"].value
    if len(desc) != 3 or desc[2] != 8:
        return ds  # a 16-bit table: pydicom reads it right
    if isinstance(data, bytes | bytearray):  # OW (every implicit VR file): 16-bit words, as pydicom reads
        little = (getattr(ds, "original_encoding", None) or (None, True))[1] is not False
        n = desc[0] or 1 << 16
        entries = np.frombuffer(bytes(data), dtype="<u2" if little else ">u2", count=min(n, len(data) // 2))
    else:
        entries = np.asarray(_values(data))
    item = Dataset()
    item.LUTDescriptor = [desc[0], desc[1], 16]
    item.LUTData = [int(v) for v in entries]
    wide = Dataset()
    wide.VOILUTSequence = Sequence([item])
    return wide


def _through_luts(arr: np.ndarray, ds: Any) -> np.ndarray:
    """The Modality LUT, then the VOI LUT (the first) or window (the widest, :func:`_widest_window`)
    of ``ds``, as float32.

    Both act on each value alone, so an integer image (at most 65,536
    distinct stored values) goes through a table of every value between its
    minimum and maximum, built by the same pydicom functions, and is then
    looked up: the same numbers as applying them to the whole image, which
    at 2800 x 2304 takes 150 ms in float64 instead of 20.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def modality(values: np.ndarray) -> np.ndarray:
        if _has_modality_lut(ds):  # the identity (slope 1, intercept 0) changes nothing
            values = apply_modality_lut(values, ds)
        return values

    windows = _windows(ds)
    window = _widest_window(windows)
    seen = not windows or _window_sees_the_film(ds, windows[window], modality(arr[::8, ::8]))
    voi = _wide_voi_lut(ds) if seen else None

    def apply(values: np.ndarray) -> np.ndarray:
        values = modality(values)
        return np.asarray(values if voi is None else apply_voi_lut(values, voi, index=window), np.float32)

    if arr.dtype.kind not in "ui" or arr.size < 1 << 16:
        return apply(arr)
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo >= 1 << 16:
        return apply(arr)
    table = apply(np.arange(lo, hi + 1, dtype=arr.dtype))
    index = arr - arr.dtype.type(lo) if arr.dtype.kind == "u" else arr.astype(np.int32) - lo
    return table[index]


def _from_dataset(ds: Any, source: str) -> LoadedImage:
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable pixel data
        raise ImageError(f"cannot decode pixel data of {source}: {exc}") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if arr.ndim == 3:  # colour (SamplesPerPixel 3): luminance
        arr = arr[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    else:
        arr = _through_luts(arr, ds)
    arr = np.asarray(arr, dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = float(arr.max()) + float(arr.min()) - arr
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ImageError(f"{source}: expected a 2-D image, got shape {arr.shape}")
    return LoadedImage(pixels=arr, pixel_spacing_mm=_spacing(ds), source=source, flips=header_flips(ds))


def load_image(path_or_dataset: Any) -> LoadedImage:
    """Read a DICOM dataset or file, PNG or JPEG into display orientation.

    Parameters
    ----------
    path_or_dataset
        A ``pydicom.Dataset`` or a path to a DICOM, PNG or JPEG file.

    Raises
    ------
    ImageError
        If the input cannot be read or decoded.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(path_or_dataset, pydicom.Dataset):
        source = str(getattr(path_or_dataset, "filename", None) or "<dataset>")
        return _from_dataset(path_or_dataset, source)
    path = Path(path_or_dataset)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    with path.open("rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:  # pydicom's own text says "use force=True"
            raise ImageError(f"{path} is not a DICOM file (no DICM preamble or File Meta)") from exc
        except Exception as exc:
            raise ImageError(f"cannot read DICOM file {path}: {exc}") from exc
        return _from_dataset(ds, str(path))
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(img, dtype=np.float32)
            else:
                arr = np.asarray(img.convert("L"), dtype=np.float32)
    except Exception as exc:
        raise ImageError(f"cannot read image file {path}: {exc}") from exc
    if arr.ndim != 2 or min(arr.shape) < 8:
        raise ImageError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    return LoadedImage(pixels=arr, pixel_spacing_mm=None, source=str(path))


def normalize(pixels: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] between the 0.5th and 99.5th percentiles of the film: a frame of constant
    lines around it (padding, a film pasted into a larger canvas, :func:`_constant_margins`) does
    not count, so a framed film is scaled as the film alone (a white frame had squeezed its greys
    into the lower half: extent 5.1 against 4.3 unframed)."""
    sample = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)]
    lo, hi = _percentiles(sample)
    r0, r1, c0, c1 = _constant_margins(np.clip((sample - lo) / (hi - lo), 0.0, 1.0))
    if (r1 - r0, c1 - c0) != sample.shape:
        lo, hi = _percentiles(sample[r0:r1, c0:c1])
    # np.clip((pixels - lo) / (hi - lo), 0, 1) in one buffer, in the pixels' float32 (lo and hi
    # are Python floats; as NumPy scalars they made it float64, within 6e-8 of this and 3x slower).
    scaled = np.subtract(pixels, lo)
    np.divide(scaled, hi - lo, out=scaled)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    return scaled.astype(np.float32, copy=False)


def _percentiles(sample: np.ndarray) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles (the range, where those two meet)."""
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi - lo < 1e-6:
        lo, hi = float(sample.min()), float(sample.max()) + 1e-6
    return float(lo), float(hi)


def _border(profile_mean: np.ndarray, profile_std: np.ndarray, limit: int) -> tuple[int, int]:
    """First and last index that is not a uniform/black border line."""
    content = (profile_std > 0.04) & (profile_mean > 0.04)
    n = len(content)
    start = 0
    while start < limit and not content[start]:
        start += 1
    end = n
    while n - end < limit and not content[end - 1]:
        end -= 1
    return start, end


CONSTANT_LINE = 0.01  # std of a line (normalised 0-1) below which it is padding or a shutter


def _not_constant(profile_std: np.ndarray) -> tuple[int, int]:
    """First and last-plus-one index of the lines that are not constant."""
    varied = np.nonzero(profile_std > CONSTANT_LINE)[0]
    return (int(varied[0]), int(varied[-1]) + 1) if len(varied) else (0, len(profile_std))


CONSTANT_PASSES = 3  # padding inside a shutter inside a frame; each pass is one such margin
# The box inside constant margins keeps at least this share of each side of the whole image.
MIN_CONTENT_SIDE = 1 / 5


def _constant_margins(norm: np.ndarray) -> tuple[int, int, int, int]:
    """The box inside margins of constant lines, at most :data:`CONSTANT_PASSES` nested margins
    deep, and only while :data:`MIN_CONTENT_SIDE` of each side of the whole image is left (an
    image whose content is a staircase or a dot is not cropped to it; a film at a third of its
    frame's size, which a third kept in the frame, is: LungNet read the frame's film at a ninth
    of its area and drew lungs over its abdomen and heart)."""
    rows, cols = norm.shape
    box = (0, rows, 0, cols)
    for _ in range(CONSTANT_PASSES):
        r0, r1, c0, c1 = box
        part = norm[r0:r1, c0:c1]
        (p0, p1), (q0, q1) = _not_constant(part.std(axis=1)), _not_constant(part.std(axis=0))
        inner = (r0 + p0, r0 + p1, c0 + q0, c0 + q1)
        too_small = min((inner[1] - inner[0]) / rows, (inner[3] - inner[2]) / cols) < MIN_CONTENT_SIDE
        if inner == box or too_small:
            break
        box = inner
    return box


def crop_box(norm: np.ndarray, max_fraction: float = 0.2) -> tuple[int, int, int, int]:
    """Crop box removing black borders and uniform burned-in text margins (Keidar et al.).

    A margin of constant lines (padding, a collimator's shutter, a film pasted into a larger
    frame) goes whatever its width (:func:`_constant_margins`); then dark or uniform lines, at
    most ``max_fraction`` of each side of what is left (a bright abdomen's rows are uniform too,
    and must not take the lung bases with them)."""
    p0, p1, q0, q1 = _constant_margins(norm)
    inner = norm[p0:p1, q0:q1]
    rows, cols = inner.shape
    r0, r1 = _border(inner.mean(axis=1), inner.std(axis=1), int(rows * max_fraction))
    c0, c1 = _border(inner.mean(axis=0), inner.std(axis=0), int(cols * max_fraction))
    if r1 - r0 < rows // 2 or c1 - c0 < cols // 2:
        r0, r1, c0, c1 = 0, rows, 0, cols
    return p0 + r0, p0 + r1, q0 + c0, q0 + c1


def preprocess(
    pixels: np.ndarray, size: int, clahe: bool = False, normalized: np.ndarray | None = None
) -> tuple[np.ndarray, Geometry]:
    """Crop, resize (aspect kept), pad to ``size`` x ``size``, scale to [-1024, 1024].

    ``normalized``: ``normalize(pixels)`` when the caller has it already.
    Returns the float32 square and the :class:`Geometry` to map outputs back.
    """
    norm = normalized if normalized is not None else normalize(np.asarray(pixels, dtype=np.float32))
    r0, r1, c0, c1 = crop_box(norm)
    h, w = r1 - r0, c1 - c0
    scale = size / max(h, w)
    resized = (max(1, min(size, round(h * scale))), max(1, min(size, round(w * scale))))
    offset = ((size - resized[0]) // 2, (size - resized[1]) // 2)
    geom = Geometry(norm.shape, (r0, r1, c0, c1), resized, offset, size)
    square = geom.to_square(norm)
    if clahe:
        from skimage.exposure import equalize_adapthist

        square = equalize_adapthist(np.clip(square, 0, 1), clip_limit=0.01).astype(np.float32)
    return (square * 2.0 - 1.0) * INTENSITY_RANGE, geom


def model_square(
    pixels: np.ndarray, size: int, normalized: np.ndarray | None = None
) -> tuple[np.ndarray, Geometry]:
    """The image as every model sees it, in training and in serving alike: :func:`preprocess`
    to ``size`` and quantised to uint8 (the training cache stores exactly this)."""
    square, geom = preprocess(pixels, size, normalized=normalized)
    return np.round((square / INTENSITY_RANGE + 1.0) * 127.5).astype(np.uint8), geom


def network_input(img8: Any) -> Any:
    """uint8 squares (N, H, W), numpy or torch, -> float tensor (N, 1, H, W) in
    [-:data:`INTENSITY_RANGE`, +:data:`INTENSITY_RANGE`], on the tensor's device."""
    import torch

    x = torch.as_tensor(img8)
    return x.float()[:, None] / 127.5 * INTENSITY_RANGE - INTENSITY_RANGE


def display_uint8(pixels: np.ndarray, normalized: np.ndarray | None = None) -> np.ndarray:
    """The uint8 display image that heatmaps and masks refer to (``normalized``: as in :func:`preprocess`)."""
    scaled = (normalized if normalized is not None else normalize(pixels)) * 255.0
    return np.round(scaled, out=scaled).astype(np.uint8)
