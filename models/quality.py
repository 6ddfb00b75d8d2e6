"""Anatomical quality check of the lung outline, and of the input itself.

Two verdicts (:class:`LungQC`):

- ``lungs_found``: the input looks like a radiograph with two lung-like fields (not blank,
  not noise, lungs large enough). When False, neither the class nor the severity is reported.
- ``assessable``: the outline is anatomically plausible, so the severity scores (which are
  read off it) can be reported. Checks, each with a reason code:

  ``blank`` (almost no contrast), ``no_structure`` (neighbouring pixels uncorrelated: noise),
  ``atypical`` (unlike every chest film trained on, by :class:`models.orientation.ChestLikeness`:
  a gradient, a smooth random texture, a photograph, another body part or modality, a film
  whited out by its display window),
  ``no_lungs`` (either lung below :data:`MIN_LUNG` of the content), ``lung_area`` (both lungs
  above :data:`MAX_LUNGS` of the content), ``left_right_ratio`` (one lung over
  :data:`MAX_RATIO` times the other), ``orientation`` (the patient's right lung not on the
  image's left, or the lungs not side by side, or the film not upright by the orientation
  model, :mod:`models.orientation`: turned 90, 180 or 270 degrees, or flipped top to bottom),
  ``inverted`` (the grey of a negative: the dense zones of an upright film, mediastinum and below
  the diaphragm, no brighter than its air zones, lungs and above the shoulders,
  :func:`dense_over_air`; the orientation model reads gradients whatever their sign, so it cannot
  tell),
  ``blurred`` (too little fine detail for the severity to be read off the film,
  :func:`detail`: a Gaussian blur of 1 % of the film's size lowers the extent by 0.3-0.5 on
  average, 2 % by about 1),
  ``image_edge`` (more than :data:`MAX_EDGE` of the outline on the image's edge),
  ``outside_body`` (more than :data:`MAX_OUTSIDE` of the lung pixels in the air around the
  body), ``shape`` (a lung's solidity below :data:`MIN_SOLIDITY`: an outline that loops out).

The thresholds are anatomical priors, fixed before measuring; their false-alarm rate on
normal films of every source is in the segmentation card. ``blurred``'s two are not: each is 0.9
times the least of the 3,619 cached films of the seven sources; its false alarms, leaving each
source out, and its catch by blur: ``python -m models.training.blurred --cache CACHE``. The
zones of ``inverted`` are where the mean upright film of the seven sources is dark or dense; its
rates on those films and on their negatives: ``python -m models.training.inverted --cache CACHE``.

:func:`refine_lungs` is the outline the node reports: the LungNet masks with the pixels in the
air around the body removed, thin bridges opened and the largest component kept per lung.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

MIN_CONTRAST = 6.0  # grey levels (std of the content, 0-255)
MIN_NEIGHBOUR_CORR = 0.75
MIN_LUNG = 0.02  # of the content area, each lung
MAX_LUNGS = 0.75
MAX_RATIO = 3.0
MAX_EDGE = 0.25
MAX_OUTSIDE = 0.05
MIN_SOLIDITY = 0.80
MIN_UPRIGHT = 0.2  # the orientation model's probability of upright below which a film is turned
MAX_ATYPICAL = 1.0  # ChestLikeness.atypical at or above which a film is unlike any chest film
MIN_DENSE_OVER_AIR = 0.0  # grey levels (dense zones' median minus air zones'); at or below: a negative
# detail(): below either, a film too blurred to read. 0.9 x the least of the 3,619 cached films
# (0.2392 and 0.4681, two covid-radiography films, 224 px at the source).
MIN_FINE_DETAIL = 0.215
MIN_MID_DETAIL = 0.421
DETAIL_INSET = 8  # px of the content box left out: the filters would read its edges as detail

REASONS = {
    "blank": "no image content",
    "no_structure": "no radiographic structure (noise)",
    "atypical": "unlike the chest films the models were trained on",
    "no_lungs": "lung fields not found",
    "lung_area": "lung fields implausibly large",
    "left_right_ratio": "left/right lung sizes implausible",
    "orientation": "lungs not in chest position (film turned or not a chest PA/AP)",
    "inverted": "grey inverted (a negative: lungs brighter than the mediastinum)",
    "blurred": "film too blurred for the severity to be read",
    "image_edge": "lung outline runs along the image edge",
    "outside_body": "lung outline outside the body",
    "shape": "lung outline implausible in shape",
}
# Each reason in at most 27 characters: the line a viewer writes under "not assessable" (dcmtk's
# ``dsrdump`` cuts a TEXT there).
SHORT_REASONS = {
    "blank": "Blank image",
    "no_structure": "Noise, no anatomy",
    "atypical": "Unlike a chest film",
    "no_lungs": "No lungs found",
    "lung_area": "Lungs implausibly large",
    "left_right_ratio": "Lung sizes implausible",
    "orientation": "Turned or not a chest film",
    "inverted": "Grey inverted: a negative",
    "blurred": "Film too blurred",
    "image_edge": "Outline at the image edge",
    "outside_body": "Outline outside the body",
    "shape": "Outline shape implausible",
}
# Reasons after which nothing lung-like was found: the classification is not reported either.
NOTHING_FOUND = ("blank", "no_structure", "atypical", "no_lungs", "orientation", "inverted")


@dataclass(frozen=True)
class LungQC:
    assessable: bool
    lungs_found: bool
    reasons: tuple[str, ...]
    measures: dict[str, float] = field(default_factory=dict)

    def text(self) -> str:
        return "; ".join(REASONS[r] for r in self.reasons) or "passed"

    def as_json(self) -> dict[str, object]:
        return {
            "assessable": self.assessable,
            "lungs_found": self.lungs_found,
            "reasons": list(self.reasons),
            "measures": {k: round(v, 4) for k, v in self.measures.items()},
        }


def body_mask(img8: np.ndarray, content: np.ndarray) -> np.ndarray:
    """The body: the content minus the dark air connected to the content's border."""
    vals = img8[content].astype(np.float32)
    if vals.size == 0:
        return content
    lo, mid = np.percentile(vals, [1, 50])
    air = content & (img8 < lo + 0.35 * (mid - lo))
    labels, n = ndimage.label(air)
    if n == 0:
        return content
    edge = content & ~ndimage.binary_erosion(content, iterations=2)
    outside = np.isin(labels, np.unique(labels[edge & air]))
    outside &= labels > 0
    return content & ~outside


def grey_zones(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Masks (air, dense) of a content box of ``shape`` for an upright PA/AP film: air, the lungs
    (ellipses centred at 45 % of the height and 28 % and 72 % of the width, half-axes 25 % and 14 %)
    and above the shoulders (the top 10 %, more than 20 % of the width off the middle); dense, the
    mediastinum (within 7 % of the middle, 15-75 % of the height) and below the diaphragm (under
    75 %). Fractions of the box, so a film's size and margins do not move them."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    y, x = (y + 0.5) / h, np.abs((x + 0.5) / w - 0.5)
    lungs = ((y - 0.45) / 0.25) ** 2 + ((x - 0.22) / 0.14) ** 2 <= 1  # 0.22 off the middle: 28 / 72 %
    air = lungs | ((y < 0.10) & (x > 0.20))
    dense = ((x < 0.07) & (y > 0.15) & (y < 0.75)) | (y > 0.75)
    return air, dense


def dense_over_air(content: np.ndarray) -> float:
    """Median grey of the dense zones minus that of the air zones (:func:`grey_zones`) of a film's
    ``content`` (the image inside its margins): positive on a chest film, the same negated on its
    negative. LungNet's outline plays no part: on a negative it outlines dark (dense) parts too."""
    air, dense = grey_zones(content.shape)
    return float(np.median(content[dense]) - np.median(content[air]))


def detail(content: np.ndarray) -> tuple[float, float]:
    """(fine, mid): how much of a film's detail survives at each scale, inside its ``content``
    (the square inside its margins, :data:`DETAIL_INSET` px in from them). Three bands of a
    Gaussian pyramid at the 256-px square (sigma 0-1.5, 1.5-3 and 3-6 px): fine is the first
    band's standard deviation over the second and third together, mid the second's over the
    third. Ratios, so neither the film's contrast nor its window moves them; a blur takes the
    finer band down first. NaN when the content is too small to read."""
    a = np.asarray(content, np.float32)
    if min(a.shape) <= 4 * DETAIL_INSET:
        return float("nan"), float("nan")
    g1, g3, g6 = (ndimage.gaussian_filter(a, s) for s in (1.5, 3.0, 6.0))
    inner = np.s_[DETAIL_INSET:-DETAIL_INSET, DETAIL_INSET:-DETAIL_INSET]
    fine, mid, coarse, mid_coarse = ((x - y)[inner].std() for x, y in ((a, g1), (g1, g3), (g3, g6), (g1, g6)))
    return float(fine / max(mid_coarse, 1e-6)), float(mid / max(coarse, 1e-6))


def too_blurred(fine: Any, mid: Any) -> Any:
    """Whether :func:`detail`'s measures (numbers or arrays) flag a film as too blurred: either
    under its limit (NaN: not read, not flagged)."""
    return (np.asarray(fine) < MIN_FINE_DETAIL) | (np.asarray(mid) < MIN_MID_DETAIL)


def _solidity(lung: np.ndarray) -> float:
    """Area over the area of the convex hull of the pixel corners (1 for a convex outline)."""
    from scipy.spatial import ConvexHull, QhullError

    if lung.sum() < 20:
        return 0.0
    rim = np.argwhere(lung & ~ndimage.binary_erosion(lung))
    corners = (rim[:, None, :] + np.array([[0, 0], [0, 1], [1, 0], [1, 1]])[None]).reshape(-1, 2)
    try:
        hull = ConvexHull(corners).volume  # the area, in 2-D
    except QhullError:
        return 0.0
    return float(min(lung.sum() / max(hull, 1.0), 1.0))


def unlike_a_chest_film(atypical: Any) -> Any:
    """Whether the chest-likeness's ``atypical`` (a number or an array) flags the film: at or
    above :data:`MAX_ATYPICAL`, or NaN."""
    return ~(np.asarray(atypical) < MAX_ATYPICAL)


def not_upright(p_upright: Any) -> Any:
    """Whether the orientation model's probability of upright (a number or an array) flags the
    film as turned: under :data:`MIN_UPRIGHT`, or NaN."""
    return ~(np.asarray(p_upright) >= MIN_UPRIGHT)


def check(
    img8: np.ndarray,
    lungs: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    upright: float | None = None,
    atypical: float | None = None,
) -> LungQC:
    """Quality verdict for one 256-px uint8 square ``img8`` and its lungs (2, H, W) (patient right,
    left); ``box`` (r0, r1, c0, c1): the part of the square that holds the image (default all);
    ``upright``: the orientation model's probability that the film is upright
    (:meth:`models.orientation.OrientationModel.upright`; None: not asked); ``atypical``: its
    :meth:`models.orientation.ChestLikeness.atypical` (None: not asked)."""
    img8 = np.asarray(img8)
    lungs = np.asarray(lungs, bool)
    h, w = img8.shape
    r0, r1, c0, c1 = box or (0, h, 0, w)
    content = np.zeros((h, w), bool)
    content[r0:r1, c0:c1] = True
    area = float(content.sum())
    sub = img8[r0:r1, c0:c1].astype(np.float32)
    m: dict[str, float] = {"contrast": float(sub.std())}
    reasons: list[str] = []
    if m["contrast"] < MIN_CONTRAST:
        return LungQC(False, False, ("blank",), m)
    a, b = sub[:, :-1].ravel(), sub[:, 1:].ravel()
    m["neighbour_corr"] = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    if m["neighbour_corr"] < MIN_NEIGHBOUR_CORR:
        return LungQC(False, False, ("no_structure",), m)
    if upright is not None:
        m["upright"] = float(upright)
        if not_upright(upright):
            reasons.append("orientation")
    if atypical is not None:
        m["atypical"] = float(atypical)
        # NaN included; a film called turned keeps that as its first reason (one a person can act on)
        if unlike_a_chest_film(atypical):
            return LungQC(False, False, (*reasons, "atypical"), m)
    m["dense_over_air"] = dense_over_air(sub)
    # the zones are those of an upright film: a film called turned is not read for its grey
    if m["dense_over_air"] <= MIN_DENSE_OVER_AIR and "orientation" not in reasons:
        return LungQC(False, False, ("inverted",), m)
    m["fine_detail"], m["mid_detail"] = detail(sub)
    if too_blurred(m["fine_detail"], m["mid_detail"]):
        reasons.append("blurred")
    right, left = lungs[0], lungs[1]
    m["right_area"], m["left_area"] = float(right.sum()) / area, float(left.sum()) / area
    if min(m["right_area"], m["left_area"]) < MIN_LUNG:
        return LungQC(False, False, (*reasons, "no_lungs"), m)
    if m["right_area"] + m["left_area"] > MAX_LUNGS:
        reasons.append("lung_area")
    ratio = m["right_area"] / m["left_area"]
    m["left_right_ratio"] = ratio
    if not 1 / MAX_RATIO <= ratio <= MAX_RATIO:
        reasons.append("left_right_ratio")
    (rr, rc), (lr, lc) = ndimage.center_of_mass(right), ndimage.center_of_mass(left)
    union = right | left
    rows, cols = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
    m["height_over_width"] = float((rows[-1] - rows[0] + 1) / (cols[-1] - cols[0] + 1))
    m["row_offset"] = float(abs(rr - lr) / (r1 - r0))
    m["solidity"] = min(_solidity(right), _solidity(left))
    misplaced = rc >= lc or m["row_offset"] > 0.25 or m["height_over_width"] < 0.45
    if misplaced and "orientation" not in reasons:
        reasons.append("orientation")
    rim = union & ~ndimage.binary_erosion(union)
    inner = ndimage.binary_erosion(content, iterations=2)
    m["edge_fraction"] = float((rim & ~inner).sum() / max(rim.sum(), 1))
    if m["edge_fraction"] > MAX_EDGE:
        reasons.append("image_edge")
    body = body_mask(img8, content)
    m["outside_body"] = float((union & ~body).sum() / max(union.sum(), 1))
    if m["outside_body"] > MAX_OUTSIDE:
        reasons.append("outside_body")
    if m["solidity"] < MIN_SOLIDITY:
        reasons.append("shape")
    found = not any(r in NOTHING_FOUND for r in reasons)
    return LungQC(not reasons, found, tuple(reasons), m)


def refine_lungs(
    img8: np.ndarray, lungs: np.ndarray, box: tuple[int, int, int, int] | None = None
) -> np.ndarray:
    """The outline the node reports: lungs inside the body, thin bridges (< 5 px) opened,
    the largest component of each lung kept, holes filled. Returns (2, H, W) bool."""
    lungs = np.asarray(lungs, bool)
    h, w = lungs.shape[1:]
    r0, r1, c0, c1 = box or (0, h, 0, w)
    content = np.zeros((h, w), bool)
    content[r0:r1, c0:c1] = True
    body = body_mask(np.asarray(img8), content)
    out = np.zeros_like(lungs)
    disk = ndimage.generate_binary_structure(2, 1)
    for k in range(lungs.shape[0]):
        m = ndimage.binary_opening(lungs[k] & body, disk, iterations=2)
        labels, n = ndimage.label(m)
        if n == 0:
            out[k] = lungs[k]  # nothing left: keep LungNet's outline (the check reports it)
            continue
        sizes = ndimage.sum(m, labels, range(1, n + 1))
        out[k] = ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1)
    return out
