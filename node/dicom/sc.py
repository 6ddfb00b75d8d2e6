"""Secondary Capture of the heatmap burned onto the X-ray (PS3.3 A.8.1).

The pixels are ``result.image`` (the display image the maps refer to) in
grey, the heatmap blended in colour where it is high, the lung outlines,
and a legend with the predicted class, the probabilities and the severity
scores. The legend never carries patient data. ``BurnedInAnnotation`` is
YES, ``ImageType`` DERIVED\\SECONDARY, the Source Image Sequence references
the analysed image and the Contributing Equipment Sequence names the
algorithm and its version.
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from highdicom.sc import SCImage
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from skimage.segmentation import find_boundaries

from models.result import CLASSES, AnalysisResult
from node.dicom.codes import CLASS_LABELS, MANUFACTURER
from node.dicom.exceptions import ResultMismatchError
from node.dicom.source import (
    algorithm_equipment,
    check_result,
    check_source,
    evidence_header,
    patient_orientation,
    source_reference,
)
from node.dicom.uids import derive_series_uid, derive_uid, series_number

logger = logging.getLogger(__name__)

KIND = "sc"
SERIES_DESCRIPTION = "CXR Node AI heatmap (not for primary diagnosis)"
COLORMAP = "jet"
MAX_ALPHA = 0.55  # opacity of the colour where the heatmap is 1
OUTLINE_RGB = (0, 255, 0)
MIN_FONT = 8  # pixels; below this the default font is unreadable
LEGEND_MAX_WIDTH = 0.6  # fraction of the columns the legend may cover


def _colormap(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of values in [0, 1] through the colormap."""
    return _colormap_lut()[_colormap_index(np.asarray(values, dtype=np.float32))]


@functools.lru_cache(maxsize=1)
def _colormap_lut() -> np.ndarray:
    import matplotlib  # noqa: PLC0415  (heavy; only needed here)

    cmap = matplotlib.colormaps[COLORMAP]
    # Integer input reads the table as it is: the same entries matplotlib picks for floats.
    return np.asarray(cmap(np.arange(cmap.N))[:, :3], dtype=np.float32)


def _colormap_index(values: np.ndarray) -> np.ndarray:
    """The table index matplotlib computes for float values in [0, 1] (Colormap.__call__)."""
    n = len(_colormap_lut())
    scaled = values * np.float32(n)
    np.minimum(scaled, n - 1, out=scaled)  # 1.0 maps to the last entry, as in matplotlib
    np.maximum(scaled, 0, out=scaled)
    return scaled.astype(np.intp)


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """uint8 RGB of a grey image with the heatmap blended in colour.

    The colour's weight grows with the heatmap, so where it is near 0 the
    X-ray is left untouched.
    """
    # (1 - a) * grey + a * colour, computed in place in float32 on full-resolution
    # images (about 3.6 Mpixel): the same numbers as the plain expression, a third of the time.
    heat = np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0)
    alpha = (MAX_ALPHA * heat)[..., None]
    rgb = _colormap(heat)
    rgb *= alpha
    rgb += (1.0 - alpha) * (image.astype(np.float32) / 255.0)[..., None]
    rgb *= 255.0
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def draw_outlines(rgb: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Draw the mask boundaries in place, a few pixels wide on large images."""
    width = max(1, round(min(rgb.shape[:2]) / 400))
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        # Only around the mask: the same pixels as on the whole image, without
        # running the morphology over millions of background pixels.
        rows, columns = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if len(rows) == 0:
            continue
        r0, r1 = max(0, rows[0] - width - 1), min(mask.shape[0], rows[-1] + width + 2)
        c0, c1 = max(0, columns[0] - width - 1), min(mask.shape[1], columns[-1] + width + 2)
        edge = find_boundaries(mask[r0:r1, c0:c1], mode="inner")
        if width > 1:
            from scipy.ndimage import binary_dilation  # noqa: PLC0415

            edge = binary_dilation(edge, iterations=width - 1)
        rgb[r0:r1, c0:c1][edge] = OUTLINE_RGB
    return rgb


def _product(algorithm_name: str) -> str:
    if algorithm_name.startswith(MANUFACTURER):
        return algorithm_name
    return f"{MANUFACTURER} {algorithm_name}"


def legend_lines(result: AnalysisResult, algorithm_name: str, algorithm_version: str) -> list[str]:
    """Text of the burned-in legend: algorithm, class, probabilities, severity."""
    predicted = result.predicted_class
    severity = result.severity
    probabilities = "  ".join(
        f"{CLASS_LABELS[name]} {result.classification[name]:.2f}" for name in reversed(CLASSES)
    )
    return [
        "AI RESULT - NOT VERIFIED",
        f"{_product(algorithm_name)} {algorithm_version}",
        f"Class: {CLASS_LABELS[predicted]} (p = {result.classification[predicted]:.2f})",
        probabilities,
        f"Severity: extent {severity.geographic_extent:.1f}/8  opacity {severity.opacity:.1f}/6",
        f"R lung: extent {severity.right.extent:.1f}/4  opacity {severity.right.opacity:.1f}/3",
        f"L lung: extent {severity.left.extent:.1f}/4  opacity {severity.left.opacity:.1f}/3",
        f"Heatmap: {result.heatmap_method} (blue low, red high); green: lungs",
    ]


def draw_legend(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """Burn the legend into the top-left corner on a dark box, with a colour bar."""
    rows, columns = rgb.shape[:2]
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    size = max(MIN_FONT, round(min(rows, columns) / 55))
    font = ImageFont.load_default(size=size)
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest > LEGEND_MAX_WIDTH * columns and size > MIN_FONT:
        # Small images: shrink the text so the legend keeps clear of the lungs.
        size = max(MIN_FONT, int(size * LEGEND_MAX_WIDTH * columns / widest))
        font = ImageFont.load_default(size=size)
    margin = max(2, size // 3)
    line_height = round(size * 1.25)
    text_width = max(draw.textlength(line, font=font) for line in lines)
    bar_height = max(4, size // 2)
    box = (
        margin,
        margin,
        min(columns - 1, round(2 * margin + text_width + margin)),
        min(rows - 1, 3 * margin + line_height * len(lines) + bar_height + margin),
    )
    draw.rectangle(box, fill=(0, 0, 0))
    y = 2 * margin
    for line in lines:
        draw.text((2 * margin, y), line, fill=(255, 255, 255), font=font)
        y += line_height
    out = np.asarray(canvas).copy()
    # Colour bar of the heatmap scale, 0 on the left, 1 on the right.
    bar_left, bar_right = 2 * margin, max(2 * margin + 1, box[2] - margin)
    bar_top = min(rows - 1, y + margin)
    bar_bottom = min(rows, bar_top + bar_height)
    if bar_bottom > bar_top and bar_right > bar_left:
        ramp = _colormap(np.linspace(0.0, 1.0, bar_right - bar_left))
        out[bar_top:bar_bottom, bar_left:bar_right] = np.rint(ramp * 255).astype(np.uint8)
    return out


def render(result: AnalysisResult, algorithm_name: str, algorithm_version: str) -> np.ndarray:
    """uint8 RGB (rows, columns, 3): heatmap blend, lung outlines, legend."""
    image = np.asarray(result.image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ResultMismatchError(f"result.image must be 2-D uint8, got {image.dtype} {image.shape}")
    rgb = blend_heatmap(image, np.asarray(result.heatmap))
    rgb = draw_outlines(rgb, [np.asarray(result.right_lung), np.asarray(result.left_lung)])
    return draw_legend(rgb, legend_lines(result, algorithm_name, algorithm_version))


def build_sc(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
) -> SCImage:
    """Build the heatmap Secondary Capture of one analysis.

    Parameters
    ----------
    source
        The analysed CR or DX image (header only is used).
    result
        What the models said; ``result.image`` gives the grey pixels.
    algorithm_name, algorithm_version
        From the model registry; in the legend and the Contributing Equipment.

    Returns
    -------
    highdicom.sc.SCImage
        RGB, in the source's study, in its own series; UIDs derived from the
        source SOP Instance UID, ``"sc"`` and ``algorithm_version``.
    """
    check_source(source, result)
    check_result(result)
    header = evidence_header(source)
    pixels = render(result, algorithm_name, algorithm_version)
    laterality = str(source.get("Laterality") or "")
    sop_instance_uid = derive_uid(source.SOPInstanceUID, KIND, algorithm_version)
    sc = SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=derive_series_uid(source.StudyInstanceUID, KIND, algorithm_version),
        series_number=series_number(KIND),
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=patient_orientation(source),
        pixel_spacing=result.pixel_spacing_mm,  # type: ignore[arg-type]  # highdicom hints int
        laterality=laterality if laterality in ("L", "R") else None,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm_equipment(algorithm_name, algorithm_version)],
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        series_description=SERIES_DESCRIPTION,
    )
    # Study-level attributes beyond those from_ref_dataset copies (e.g. Study Description).
    sc.copy_patient_and_study_information(header)
    # General Image Module (PS3.3 C.7.6.1): text is burned in; derived from the source.
    sc.BurnedInAnnotation = "YES"
    if source.get("BodyPartExamined"):
        sc.BodyPartExamined = source.BodyPartExamined
    if "Laterality" not in sc and "BodyPartExamined" not in sc:
        # General Series Module (PS3.3 C.7.3.1): Laterality is Type 2C for paired
        # body parts; without Body Part Examined a validator cannot tell, so empty.
        sc.Laterality = ""
    sc.DerivationDescription = (
        f"{result.heatmap_method} heatmap, lung outlines and legend by {algorithm_name} {algorithm_version}"
    )
    reference = source_reference(source)
    reference.PurposeOfReferenceCodeSequence = [_purpose_item()]
    sc.SourceImageSequence = [reference]
    if source.get("LossyImageCompression") == "01":
        # PS3.3 C.7.6.1.1.5: once lossy, derived images stay flagged as lossy.
        sc.LossyImageCompression = "01"
    logger.info(
        "built SC %s for source %s (%s %s)",
        sop_instance_uid,
        source.SOPInstanceUID,
        algorithm_name,
        algorithm_version,
    )
    return sc


def _purpose_item() -> Dataset:
    code = codes.DCM.SourceImageForImageProcessingOperation  # 121322
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item
