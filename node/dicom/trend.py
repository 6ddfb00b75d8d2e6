"""The patient's course on the SC: a small plot of extent and opacity over time, top right.

Each earlier study of the patient (:attr:`models.result.CaseContext.course`,
oldest first) and this image are points at their study dates; geographic
extent (0-8) and opacity (0-6) are drawn on one axis as a fraction of their
maximum, so both fill the plot's height. Sized from the image, as the SC's
text is (:mod:`node.dicom.sc`). No patient data: dates and scores only.
"""

from __future__ import annotations

from datetime import date

from PIL import Image, ImageDraw, ImageFont

from models.result import AnalysisResult

EXTENT_RGB = (255, 170, 0)
OPACITY_RGB = (0, 220, 255)
AXIS_RGB = (200, 200, 200)
BOX_RGB = (0, 0, 0)
WIDTH = 0.30  # of the columns
HEIGHT = 0.20  # of the rows
FONT = 1 / 60  # of the rows


def trend_points(result: AnalysisResult, today: date | None) -> list[tuple[date, float, float]]:
    """(date, extent, opacity) of the dated earlier studies and of this image, oldest first;
    none when this image's scores were withheld (no point to draw for it)."""
    context = result.context
    if context is None or not context.course or today is None or not result.quality.assessable:
        return []
    points = [(c.study_date, c.geographic_extent, c.opacity) for c in context.course if c.study_date]
    points.append((today, result.severity.geographic_extent, result.severity.opacity))
    return points


def draw_trend(canvas: Image.Image, points: list[tuple[date, float, float]]) -> None:
    """Draw the plot of ``points`` (at least two) in the top right corner of ``canvas``."""
    if len(points) < 2:
        return
    columns, rows = canvas.size
    draw = ImageDraw.Draw(canvas)
    size = max(8, round(rows * FONT))
    font = ImageFont.load_default(size=size)
    width, height = round(columns * WIDTH), round(rows * HEIGHT)
    margin = max(2, size // 2)
    x0, y0 = columns - width - margin, margin
    draw.rectangle((x0, y0, x0 + width, y0 + height), fill=BOX_RGB)
    draw.text((x0 + margin, y0 + margin // 2), "Course: ", fill=AXIS_RGB, font=font)
    x = x0 + margin + draw.textlength("Course: ", font=font)
    draw.text((x, y0 + margin // 2), "extent /8", fill=EXTENT_RGB, font=font)
    x += draw.textlength("extent /8   ", font=font)
    draw.text((x, y0 + margin // 2), "opacity /6", fill=OPACITY_RGB, font=font)
    # plot area
    left, right = x0 + 2 * margin, x0 + width - 2 * margin
    top, bottom = y0 + margin + round(size * 1.5), y0 + height - margin - round(size * 1.4)
    draw.line((left, bottom, right, bottom), fill=AXIS_RGB, width=1)
    draw.line((left, top, left, bottom), fill=AXIS_RGB, width=1)
    first, last = points[0][0], points[-1][0]
    span = max((last - first).days, 1)

    def xy(day: date, fraction: float) -> tuple[float, float]:
        return (
            left + (right - left) * (day - first).days / span,
            bottom - (bottom - top) * min(max(fraction, 0.0), 1.0),
        )

    radius = max(2, size // 4)
    for colour, scores, maximum in (
        (EXTENT_RGB, [p[1] for p in points], 8.0),
        (OPACITY_RGB, [p[2] for p in points], 6.0),
    ):
        line = [xy(p[0], score / maximum) for p, score in zip(points, scores, strict=True)]
        draw.line(line, fill=colour, width=max(1, size // 6), joint="curve")
        for cx, cy in line:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    draw.text((left, bottom + 2), first.isoformat(), fill=AXIS_RGB, font=font)
    label = f"{last.isoformat()} (now)"
    draw.text((right - draw.textlength(label, font=font), bottom + 2), label, fill=AXIS_RGB, font=font)
