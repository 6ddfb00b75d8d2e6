"""Secondary Capture of the heatmap burned onto the X-ray (PS3.3 A.8.1).

The pixels are ``result.image`` (the display image the maps refer to) in
grey, the heatmap blended in colour where it is high, the lung outlines;
at the top left "NOT FOR DIAGNOSTIC USE", the predicted class and the
severity, at the bottom left every probability, each lung's scores, the
colour scale and the algorithm. Text is sized from the image height, so it
keeps its size on screen when a viewer fits the image to its window. The
text never carries patient data. ``BurnedInAnnotation`` is
YES, ``ImageType`` DERIVED\\SECONDARY, the Source Image Sequence references
the analysed image and the Contributing Equipment Sequence names the
algorithm and its version.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from datetime import date

import numpy as np
from highdicom.sc import SCImage
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from skimage.measure import find_contours

from models.quality import SHORT_REASONS
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
    study_date,
)
from node.dicom.trend import draw_trend, trend_points
from node.dicom.uids import derive_series_uid, derive_uid, instance_number, series_number

logger = logging.getLogger(__name__)

KIND = "sc"
SERIES_DESCRIPTION = "CXR Node AI heatmap (not for primary diagnosis)"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
COLORMAP = "jet"
MAX_ALPHA = 0.55  # opacity of the colour where the heatmap is 1
MIN_HEAT = 0.25  # below this the X-ray is left grey (no wash of low values over the image)
OUTLINE_RGB = (0, 255, 0)
MODEL_GRID = 256  # the segmentation's input size; its masks are upsampled from it
WARNING_RGB = (255, 220, 0)
URGENT_RGB = (255, 64, 64)
URGENT = "URGENT (triage rule)"
NOT_ASSESSABLE = "not assessable"
TEXT_RGB = (255, 255, 255)
BOX_RGB = (0, 0, 0)
MIN_FONT = 8  # pixels; below this the default font is unreadable
# Text height as a fraction of the image height: a viewer fits the image to its
# window, so text in image pixels must grow with the image to keep its size on
# screen. 1/40 of the rows is 25 screen pixels when 2000 rows show as 1000.
HEADER_FONT = 1 / 40
FOOTER_FONT = 1 / 52
MAX_TEXT_WIDTH = 0.9  # fraction of the columns a text box may cover
MIN_SIDE = 512  # a smaller image is upscaled to this shorter side: room for the legend's text
MAX_UPSCALED_SIDE = 4096  # ... while its longer side stays within this (a 100 x 20000 strip)
SCALE_SUFFIX = "high;  green: lung outline"
SCALE_HIGH = "high"  # the scale's end when no outline is drawn


def _colormap(values: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] of values in [0, 1] through the colormap."""
    return np.take(_colormap_lut(), _colormap_index(np.asarray(values, dtype=np.float32)), axis=0)


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


# A source without a window of its own (PS3.3 C.11.2) gets one from its lungs: from the
# darkest lung grey to the brightest grey of the chest around them (the lungs' bounding
# box: mediastinum, heart, diaphragm), in percentiles that ignore a few outliers.
LUNG_WINDOW_PERCENTILES = (0.5, 99.5)


def has_window(source: Dataset) -> bool:
    """Whether the source brings its own VOI: a VOI LUT Sequence or Window Center and Width."""
    return "VOILUTSequence" in source or ("WindowCenter" in source and "WindowWidth" in source)


def lung_window(image: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """``image`` (uint8 grey) windowed from its lungs: low to high percentile (see
    ``LUNG_WINDOW_PERCENTILES``) stretched to 0-255; unchanged without lungs or contrast."""
    image = np.asarray(image, dtype=np.uint8)
    step = max(1, min(image.shape) // 256)  # percentiles of a grid sample: as good, far faster
    grey = image[::step, ::step]
    lungs = np.logical_or.reduce([np.asarray(m, dtype=bool)[::step, ::step] for m in masks])
    if lungs.sum() < 64:
        return image
    rows, columns = np.nonzero(lungs.any(axis=1))[0], np.nonzero(lungs.any(axis=0))[0]
    chest = grey[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]
    low = float(np.percentile(grey[lungs], LUNG_WINDOW_PERCENTILES[0]))
    high = float(np.percentile(chest, LUNG_WINDOW_PERCENTILES[1]))
    if high - low < 16:
        return image
    lut = np.clip(np.rint((np.arange(256) - low) * 255.0 / (high - low)), 0, 255).astype(np.uint8)
    return lut[image]


def blend_heatmap(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """uint8 RGB of a grey image with the heatmap blended in colour.

    The colour's weight grows with the heatmap from ``MIN_HEAT`` up, so
    where the map is low the X-ray is left untouched.
    """
    # (1 - a) * grey + a * colour, computed in float32 only where the heat is above
    # MIN_HEAT (elsewhere a is 0: the grey itself): the same numbers as the plain
    # expression over the whole image (about 3.6 Mpixel), in a fraction of the time.
    image = np.asarray(image, dtype=np.uint8)
    out = np.stack([image] * 3, axis=-1)
    hot = np.flatnonzero(np.asarray(heatmap) > MIN_HEAT)  # NaN is not: it counts as 0, as below
    heat = np.clip(np.nan_to_num(np.asarray(heatmap).ravel()[hot].astype(np.float32)), 0.0, 1.0)
    alpha = (MAX_ALPHA * np.clip((heat - MIN_HEAT) / (1.0 - MIN_HEAT), 0.0, 1.0))[..., None]
    rgb = _colormap(heat)
    rgb *= alpha
    rgb += (1.0 - alpha) * (image.ravel()[hot].astype(np.float32) / 255.0)[..., None]
    rgb *= 255.0
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    out.reshape(-1, 3)[hot] = rgb.astype(np.uint8)
    return out


def outline_width(rows: int, columns: int) -> int:
    """Outline width in pixels: about 2.5 screen pixels at any fit-to-window size."""
    return max(1, round(max(rows, columns) / 400))


def _block_mean(box: np.ndarray, step: int) -> np.ndarray:
    """float32 mean of each ``step`` x ``step`` block of a 0/1 array (sides multiples of step).

    Strided sums: several times faster than ``reshape(...).mean(axis=(1, 3))``.
    """
    columns = box[:, 0::step].copy()
    for i in range(1, step):
        columns += box[:, i::step]
    blocks = columns[0::step].copy()
    for i in range(1, step):
        blocks += columns[i::step]
    return blocks.astype(np.float32) / np.float32(step * step)


def draw_outlines(rgb: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """Draw the outline of each mask, closed also where a mask meets the image edge.

    The masks come upsampled from the model's grid, so their edges are
    stairs; the outline is the 0.5 iso-line of the mask blurred by about
    half a model pixel, which follows the mask without the steps. It is
    traced on a grid of about twice the model's (the mask averaged over
    blocks of ``step`` x ``step`` pixels), around each mask only: at the
    outline's width (several pixels) the same line as at full resolution,
    in a tenth of the time.
    """
    from scipy.ndimage import gaussian_filter  # noqa: PLC0415

    rows, columns = rgb.shape[:2]
    width = outline_width(rows, columns)
    step = max(1, max(rows, columns) // (2 * MODEL_GRID))
    sigma = max(rows, columns) / MODEL_GRID / 2
    # The block average already blurs by a box of `step` pixels (variance (step^2 - 1) / 12).
    sigma_grid = max(0.5, np.sqrt(max(sigma**2 - (step**2 - 1) / 12, 0.0))) / step
    reach = int(4 * sigma_grid + 0.5) + 1  # how far scipy's Gaussian reaches (truncate=4)
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    for mask in masks:
        mask = np.asarray(mask, dtype=bool)
        found_rows, found_cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        if not len(found_rows):
            continue
        # The box around the mask, grown to whole blocks and padded with zeros as if
        # the image went on empty, so that a mask touching the border is closed there.
        r0, c0 = found_rows[0], found_cols[0]
        height = -(-(found_rows[-1] + 1 - r0) // step) * step
        width_ = -(-(found_cols[-1] + 1 - c0) // step) * step
        box = np.zeros((height, width_), dtype=np.uint16)  # block sums up to step**2
        part = mask[r0 : r0 + height, c0 : c0 + width_]
        box[: part.shape[0], : part.shape[1]] = part
        grid = _block_mean(box, step)
        padded = gaussian_filter(np.pad(grid, reach), sigma=sigma_grid, mode="constant")
        for contour in find_contours(padded, 0.5):
            if len(contour) > 2:
                # Grid cell i spans pixels r0 + (i - reach) * step ... + step - 1.
                contour = (contour - reach) * step + ((step - 1) / 2 + r0, (step - 1) / 2 + c0)
                draw.line(contour[:, ::-1].ravel().tolist(), fill=OUTLINE_RGB, width=width, joint="curve")
    rgb[...] = np.asarray(canvas)
    return rgb


def _product(algorithm_name: str) -> str:
    if algorithm_name.startswith(MANUFACTURER):
        return algorithm_name
    return f"{MANUFACTURER} {algorithm_name}"


def header_lines(result: AnalysisResult) -> list[str]:
    """Top of the image: the warning, the class and the severity, read first; then the
    triage flag and the change since the patient's previous study, when there are."""
    reported = result.reported_class
    severity = result.severity
    quality = result.quality
    lines = [
        NOT_FOR_DIAGNOSIS,
        f"Class: {CLASS_LABELS[reported]} (p = {result.classification[reported]:.2f})"
        if reported
        else f"Class: {NOT_ASSESSABLE}",
        f"Severity: extent {severity.geographic_extent:.1f}/8  opacity {severity.opacity:.1f}/6"
        if quality.assessable
        else f"Severity: {NOT_ASSESSABLE} ({_short_reason(quality.reasons, quality.description)})",
    ]
    context = result.context
    if context is not None and context.triage is not None and context.triage.urgent:
        lines.append(f"{URGENT}: {', '.join(_reason_in_words(r) for r in context.triage.reasons)}")
    elif context is not None and context.triage is not None and not context.triage.assessed:
        lines.append("Triage: not assessed")
    if context is not None and context.changes:
        change = context.changes[0]
        when = change.case.study_date.isoformat() if change.case.study_date else "?"
        lines.append(f"Since {when}: extent {change.geographic_extent:+.1f}  opacity {change.opacity:+.1f}")
    return lines


def _short_reason(reasons: tuple[str, ...], description: str) -> str:
    """The quality check's first reason in a few words (the SR codes every reason): the whole
    description of several reasons made the header's widest line, and the header's font shrank
    to a third of the footer's to fit it."""
    return next((SHORT_REASONS[r] for r in reasons if r in SHORT_REASONS), description)


def _reason_in_words(reason: str) -> str:
    """A triage reason (``covid19 0.23 >= 0.07``) as the banner shows it: ``COVID-19 p 0.23``."""
    metric, _, rest = reason.partition(" ")
    value = rest.split(" >= ")[0]
    label = f"{CLASS_LABELS[metric]} p" if metric in CLASS_LABELS else metric.replace("_", " ")
    return f"{label} {value}"


def footer_lines(result: AnalysisResult, algorithm_name: str, algorithm_version: str) -> list[str]:
    """Bottom of the image: every probability, each lung, the scale, the algorithm."""
    severity = result.severity
    quality = result.quality
    return [
        "  ".join(f"{CLASS_LABELS[name]} {result.classification[name]:.2f}" for name in reversed(CLASSES))
        if quality.lungs_found
        else "Class probabilities withheld",
        f"R lung: extent {severity.right.extent:.1f}/4  opacity {severity.right.opacity:.1f}/3   "
        f"L lung: extent {severity.left.extent:.1f}/4  opacity {severity.left.opacity:.1f}/3"
        if quality.assessable
        else "Lung scores and outlines withheld",
        f"Heatmap ({result.heatmap_method}): low" if quality.lungs_found else "Heatmap withheld",
        f"{_product(algorithm_name)} {algorithm_version} - AI result, not verified",
    ]


def legend_lines(result: AnalysisResult, algorithm_name: str, algorithm_version: str) -> list[str]:
    """Every line of text burned in, header then footer."""
    return header_lines(result) + footer_lines(result, algorithm_name, algorithm_version)


def _fitted_font(
    draw: ImageDraw.ImageDraw, lines: list[str], size: int, max_width: float
) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    font = ImageFont.load_default(size=size)
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest > max_width and size > MIN_FONT:
        # Narrow images: shrink the text until the widest line fits.
        font = ImageFont.load_default(size=max(MIN_FONT, int(size * max_width / widest)))
    return font


def _font_size(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    return int(getattr(font, "size", MIN_FONT))


def _text_box(
    canvas: Image.Image,
    lines: list[str],
    size: int,
    top: bool,
    colours: list[tuple[int, int, int]],
    scale_line: str | None = None,
    suffix: str = SCALE_SUFFIX,
) -> tuple[int, int, int, int]:
    """Draw lines of text on a black box in the top or the bottom left corner.

    On ``scale_line`` a gap for the heatmap's colour bar follows the text,
    then ``suffix``. Returns the bar's (left, top, right, bottom), all
    zero without a scale line.
    """
    draw = ImageDraw.Draw(canvas)
    columns, rows = canvas.size
    size = round(size)
    bar_chars = 6  # the colour bar is as wide as six font sizes
    sized = [line + " " * bar_chars * 2 + suffix if line == scale_line else line for line in lines]
    font = _fitted_font(draw, sized, size, MAX_TEXT_WIDTH * columns)
    size = _font_size(font)
    margin = max(2, size // 3)
    line_height = round(size * 1.25)
    bar_width = bar_chars * size
    widths = [draw.textlength(line, font=font) for line in lines]
    if scale_line is not None:
        i = lines.index(scale_line)
        widths[i] += 2 * margin + bar_width + draw.textlength(suffix, font=font)
    right = min(columns - 1, round(3 * margin + max(widths)))
    height = min(rows - 1 - 2 * margin, 2 * margin + line_height * len(lines))
    y0 = margin if top else rows - 1 - margin - height
    draw.rectangle((margin, y0, right, y0 + height), fill=BOX_RGB)
    bar = (0, 0, 0, 0)
    y = y0 + margin
    for line, colour in zip(lines, colours, strict=True):
        draw.text((2 * margin, y), line, fill=colour, font=font)
        if line == scale_line:
            x = round(2 * margin + draw.textlength(line, font=font) + margin)
            bar = (x, y + size // 5, x + bar_width, y + size)
            draw.text((x + bar_width + margin, y), suffix, fill=colour, font=font)
        y += line_height
    return bar


def draw_legend(
    rgb: np.ndarray,
    header: list[str],
    footer: list[str],
    scale_line: str | None = None,
    scale_suffix: str = SCALE_SUFFIX,
) -> np.ndarray:
    """Burn the header (top left, larger) and the footer (bottom left) into the image."""
    canvas = Image.fromarray(rgb)
    rows = rgb.shape[0]
    header_size = max(MIN_FONT, round(rows * HEADER_FONT))
    footer_size = max(MIN_FONT, round(rows * FOOTER_FONT))
    colours = [WARNING_RGB] + [URGENT_RGB if line.startswith(URGENT) else TEXT_RGB for line in header[1:]]
    _text_box(canvas, header, header_size, True, colours)
    bar = _text_box(canvas, footer, footer_size, False, [TEXT_RGB] * len(footer), scale_line, scale_suffix)
    out = np.asarray(canvas).copy()
    rows, columns = out.shape[:2]
    left, top, right, bottom = bar
    right, bottom = min(right, columns), min(bottom, rows)  # tiny images: text cut, bar too
    if right > left and bottom > top:
        # Colour bar of the heatmap scale as blended at full strength, low on the left.
        ramp = _colormap(np.linspace(MIN_HEAT, 1.0, right - left))
        out[top:bottom, left:right] = np.rint(ramp * 255).astype(np.uint8)
    return out


def render(
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
    today: date | None = None,
    window_from_lungs: bool = False,
) -> np.ndarray:
    """uint8 RGB (rows, columns, 3): heatmap blend, lung outlines, header and footer, and the
    patient's course (:mod:`node.dicom.trend`) when there are earlier studies and ``today``;
    with ``window_from_lungs``, the grey windowed from the lungs (:func:`lung_window`)."""
    image = np.asarray(result.image)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ResultMismatchError(f"result.image must be 2-D uint8, got {image.dtype} {image.shape}")
    if window_from_lungs:
        image = lung_window(image, [np.asarray(result.right_lung), np.asarray(result.left_lung)])
    quality = result.quality
    # What the quality check withholds is not drawn either: no heatmap where no lungs were found
    # (it would explain a class that is not reported), no outline that failed the check (as in
    # the SR).
    rgb = (
        blend_heatmap(image, np.asarray(result.heatmap)) if quality.lungs_found else np.stack([image] * 3, -1)
    )
    if quality.assessable:
        rgb = draw_outlines(rgb, [np.asarray(result.right_lung), np.asarray(result.left_lung)])
    footer = footer_lines(result, algorithm_name, algorithm_version)
    points = trend_points(result, today)
    if len(points) > 1:
        canvas = Image.fromarray(rgb)
        draw_trend(canvas, points)
        rgb = np.asarray(canvas).copy()
    return draw_legend(
        rgb,
        header_lines(result),
        footer,
        scale_line=footer[2] if quality.lungs_found else None,
        scale_suffix=SCALE_SUFFIX if quality.assessable else SCALE_HIGH,
    )


def fit_to_size(result: AnalysisResult, max_size: int, min_side: int = MIN_SIDE) -> AnalysisResult:
    """The result with its image, heatmap and lungs downscaled so that the longer side is at
    most ``max_size`` pixels (0: unchanged), or upscaled so that the shorter side is at least
    ``min_side`` (the legend's text needs the room: on a 192-px film its lines were cut and
    covered most of the film), and its pixel spacing scaled to match.

    Rows and columns are scaled by the same factor, rounded each; the spacing
    of each axis by that axis's own ratio, so that rows x spacing still spans
    the source's field of view. The X-ray is area-averaged (Pillow's box
    filter); the heatmap and the lungs, upsampled from the models' grids of
    256 px or less, are sampled at each new pixel's centre (nearest), which at
    any size above those grids keeps them as they were, at a fraction of the
    cost of filtering 6 Mpixel float maps.
    """
    image = np.asarray(result.image)
    rows, columns = image.shape[:2]
    if 0 < max_size < max(rows, columns):
        scale = max_size / max(rows, columns)
    elif min(rows, columns) < min_side:
        # ... without the longer side passing max_size (or, with none, MAX_UPSCALED_SIDE)
        scale = min(min_side / min(rows, columns), (max_size or MAX_UPSCALED_SIDE) / max(rows, columns))
        if scale <= 1:
            return result
    else:
        return result
    new_rows, new_columns = max(1, round(rows * scale)), max(1, round(columns * scale))
    spacing = result.pixel_spacing_mm
    if spacing is not None:
        spacing = (spacing[0] * rows / new_rows, spacing[1] * columns / new_columns)
    # Nearest source pixel of each new pixel's centre, as Pillow's NEAREST picks it.
    pick_rows = np.minimum(((np.arange(new_rows) + 0.5) * rows / new_rows).astype(np.intp), rows - 1)
    pick_columns = np.minimum(
        ((np.arange(new_columns) + 0.5) * columns / new_columns).astype(np.intp), columns - 1
    )

    def sample(values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[pick_rows][:, pick_columns]

    grey = Image.fromarray(image.astype(np.uint8, copy=False)).resize(
        (new_columns, new_rows), Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    )
    return replace(
        result,
        image=np.asarray(grey),
        heatmap=sample(result.heatmap),
        right_lung=sample(result.right_lung),
        left_lung=sample(result.left_lung),
        pixel_spacing_mm=spacing,
    )


def build_sc(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
    *,
    max_size: int = 0,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
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
    max_size
        Longest side of the SC in pixels: a larger image is downscaled
        (:func:`fit_to_size`) and its Pixel Spacing scaled; 0 keeps the
        source's size. Either way an image under :data:`MIN_SIDE` on its shorter side is
        upscaled towards it. The node's default is ``Settings.sc_max_size``.
    transfer_syntax_uid
        Explicit VR Little Endian, or JPEG-LS Lossless (``Settings.sc_compression``).

    Returns
    -------
    highdicom.sc.SCImage
        RGB, in the source's study, in its own series; UIDs derived from the
        source SOP Instance UID, ``"sc"`` and ``algorithm_version``.
    """
    check_source(source, result)
    check_result(result)
    header = evidence_header(source)
    result = fit_to_size(result, max_size)
    # The source's own window (applied when its pixels were read) where it has one.
    pixels = render(
        result,
        algorithm_name,
        algorithm_version,
        today=study_date(source)[0],
        window_from_lungs=not has_window(source),
    )
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
        instance_number=instance_number(source),
        manufacturer=MANUFACTURER,
        patient_orientation=patient_orientation(source),
        pixel_spacing=result.pixel_spacing_mm,  # type: ignore[arg-type]  # highdicom hints int
        laterality=None,  # a chest is no paired body part (PS3.3 C.7.3.1: Laterality 2C)
        transfer_syntax_uid=transfer_syntax_uid,
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
