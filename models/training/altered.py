"""Real chest films altered the way a site's films differ from the ones cached: tilted, cropped
tight, collimated, windowed otherwise. They stand on the chest-film side of the chest-likeness's
second measure (:class:`models.orientation.OtherImages`), beside the upright films themselves.

Fitted on the cached films alone, that measure learnt the look of a well-centred, well-windowed
film, and a review of 281 films in 25 variants found it withholding 0.7-2.8 % of films tilted by
15 degrees, 1.8 % of tight crops and 1.4 % of films with a bright collimator edge (its PCA
distance alone: 0-0.4 %). Each variant here starts from a cached film's content (the chained
256-px square inside its content box), is altered, and goes through the node's own preprocessing
(:func:`models.training.extract.chained`), as the generated pictures of
:func:`models.training.textures.sample` do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Alteration = Callable[[np.ndarray, np.random.Generator], np.ndarray]
MAX_TILT = 15.0  # degrees either way


def tilted(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turned by up to :data:`MAX_TILT` degrees: a patient turned on the detector (cropped to
    the part the turn keeps whole) or a film scanned askew (corners filled black or white)."""
    from skimage.transform import rotate

    angle = rng.uniform(-MAX_TILT, MAX_TILT)
    if rng.random() < 0.5:
        out = rotate(img, angle, resize=False, mode="reflect")
        h, w = img.shape
        t = np.tan(np.radians(abs(angle)))
        dr, dc = int(np.ceil(w * t / 2)), int(np.ceil(h * t / 2))
        return out[dr : max(h - dr, dr + 8), dc : max(w - dc, dc + 8)]
    return rotate(img, angle, resize=True, mode="constant", cval=float(rng.choice([0.0, 1.0])))


def cropped(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """65-90 % of each side kept, anywhere: a film framed tight on the chest or on one part of it."""
    h, w = img.shape
    kh, kw = int(h * rng.uniform(0.65, 0.9)), int(w * rng.uniform(0.65, 0.9))
    r, c = int(rng.integers(0, h - kh + 1)), int(rng.integers(0, w - kw + 1))
    return img[r : r + kh, c : c + kw]


def collimated(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright bands (the collimator's shadow, barely exposed) of 3-20 % on one to four sides: the
    anatomy under them faint (scatter), so not uniform lines the preprocessing crops away."""
    out = img.copy()
    h, w = out.shape
    level, faint = rng.uniform(0.75, 0.95), rng.uniform(0.1, 0.3)
    for side in rng.permutation(4)[: int(rng.integers(1, 5))]:
        n = int((h if side < 2 else w) * rng.uniform(0.03, 0.2))
        band = [np.s_[:n, :], np.s_[h - n :, :], np.s_[:, :n], np.s_[:, w - n :]][side]
        out[band] = np.clip(level + faint * (img[band] - img[band].mean()), 0, 1)
    return out


def windowed(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another grey curve: gamma 0.5-2, its ends clipped by up to a tenth."""
    lo, hi = rng.uniform(0, 0.1), rng.uniform(0.9, 1.0)
    return np.asarray(np.clip((img - lo) / (hi - lo), 0, 1) ** rng.uniform(0.5, 2.0))


ALTERATIONS: dict[str, Alteration] = {f.__name__: f for f in (tilted, cropped, collimated, windowed)}


def alter(
    img8: np.ndarray, box: tuple[int, int, int, int], kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A cached film (chained 256-px square, content box) altered by ``kind`` of
    :data:`ALTERATIONS`, as the models see it: the chained square and its content box."""
    from models.training.extract import chained

    r0, r1, c0, c1 = box
    content = np.asarray(img8[r0:r1, c0:c1], np.float64) / 255.0
    altered = ALTERATIONS[kind](content, rng)
    return chained(np.asarray(np.clip(altered, 0, 1) * 4095, np.float32))
