"""Checks of the Image Pixel module (PS3.3 C.7.6.3) of a received image.

Policy: a data set whose Image Pixel module contradicts itself, so that its
pixels cannot be decoded as described, is refused with 0xC210 naming the
attribute (``InvalidInstanceError``) and kept under ``spool/rejected/``.
A consistent module that is merely not what the models take (RGB, 32 bits
allocated, a tiny image) is stored and audited as ineligible by
``node.routing``: the node is strict on what it emits, tolerant on what it
receives.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from node.exceptions import DatasetMismatchError, InvalidInstanceError

# PS3.3 C.7.6.3.1.2: Samples per Pixel of each Photometric Interpretation.
SAMPLES_PER_PHOTOMETRIC: dict[str, int] = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_PARTIAL_420": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
    "XYB": 3,
}
# PS3.3 C.7.6.3.1.1 allows 1 or a multiple of 8; these are the ones pydicom decodes.
DECODABLE_BITS_ALLOCATED = (1, 8, 16, 32)

_TYPE1 = {
    "Rows": "(0028,0010)",
    "Columns": "(0028,0011)",
    "SamplesPerPixel": "(0028,0002)",
    "PhotometricInterpretation": "(0028,0004)",
    "BitsAllocated": "(0028,0100)",
    "BitsStored": "(0028,0101)",
    "HighBit": "(0028,0102)",
    "PixelRepresentation": "(0028,0103)",
}


def _name(keyword: str) -> str:
    words = "".join(f" {c}" if c.isupper() else c for c in keyword).strip()
    return f"{words} {_TYPE1[keyword]}"


def _integer(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InvalidInstanceError(f"{_name(keyword)} is missing (Type 1 in PS3.3 C.7.6.3)")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"{_name(keyword)} is not an integer: {exc}") from exc


def check_pixels(ds: Dataset) -> None:
    """Raise InvalidInstanceError naming the first Image Pixel module rule ``ds`` breaks."""
    if "PixelData" not in ds:
        raise DatasetMismatchError("Pixel Data (7FE0,0010) is missing: no image of its SOP Class")
    rows, columns = _integer(ds, "Rows"), _integer(ds, "Columns")
    if rows < 1 or columns < 1:
        raise InvalidInstanceError(f"Rows/Columns (0028,0010/0011) are {rows}x{columns}")
    samples = _integer(ds, "SamplesPerPixel")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise InvalidInstanceError(f"{_name('PhotometricInterpretation')} is missing")
    if photometric not in SAMPLES_PER_PHOTOMETRIC:
        raise InvalidInstanceError(
            f"{_name('PhotometricInterpretation')} is {photometric!r}, not a defined term (PS3.3 C.7.6.3.1.2)"
        )
    if samples != SAMPLES_PER_PHOTOMETRIC[photometric]:
        raise InvalidInstanceError(
            f"{_name('SamplesPerPixel')} is {samples}; {photometric} needs "
            f"{SAMPLES_PER_PHOTOMETRIC[photometric]} (PS3.3 C.7.6.3.1.2)"
        )
    if samples > 1 and ds.get("PlanarConfiguration") not in (0, 1):
        raise InvalidInstanceError(
            "Planar Configuration (0028,0006) must be 0 or 1 when Samples per Pixel > 1 (PS3.3 C.7.6.3.1.3)"
        )
    bits_allocated = _integer(ds, "BitsAllocated")
    if bits_allocated not in DECODABLE_BITS_ALLOCATED:
        raise InvalidInstanceError(f"{_name('BitsAllocated')} is {bits_allocated}")
    bits_stored = _integer(ds, "BitsStored")
    if not 1 <= bits_stored <= bits_allocated:
        raise InvalidInstanceError(
            f"{_name('BitsStored')} is {bits_stored}; it must be 1 to Bits Allocated "
            f"({bits_allocated}) (PS3.3 C.7.6.3)"
        )
    high_bit = _integer(ds, "HighBit")
    if high_bit != bits_stored - 1:
        raise InvalidInstanceError(
            f"{_name('HighBit')} is {high_bit}; it must be Bits Stored - 1 ({bits_stored - 1}) "
            "(PS3.3 C.7.6.3)"
        )
    pixel_representation = _integer(ds, "PixelRepresentation")
    if pixel_representation not in (0, 1):
        raise InvalidInstanceError(f"{_name('PixelRepresentation')} is {pixel_representation}, not 0 or 1")
    _check_length(ds, rows * columns, samples, photometric, bits_allocated)


def _check_length(ds: Dataset, pixels: int, samples: int, photometric: str, bits_allocated: int) -> None:
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInstanceError(f"Number of Frames (0028,0008) is not an integer: {exc}") from exc
    if frames < 1:
        raise InvalidInstanceError(f"Number of Frames (0028,0008) is {frames}")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None or ts.is_encapsulated:
        return  # the codec checks compressed frames when the worker decodes them
    if photometric == "YBR_FULL_422":
        samples = 2  # PS3.3 C.7.6.3.1.2: two chroma samples shared by each pair of pixels
    expected = -(-pixels * samples * frames * bits_allocated // 8)
    actual = len(ds.PixelData or b"")  # an empty element reads as None
    if actual < expected:
        raise InvalidInstanceError(
            f"Pixel Data (7FE0,0010) has {actual} bytes, Rows x Columns need {expected}"
        )
