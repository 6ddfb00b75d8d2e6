"""Is the film upright? A linear model on the shape of the film's content, for films that come
without a Patient Orientation (or with a wrong one): turned on its side, upside down (turned 180
degrees) or upside down as a mirror image (rows stored bottom first).

LungNet was trained on upright films; on a turned film it still draws lungs, and the severity
and class read off them are nonsense. LungNet's own confidence catches most films turned 90
degrees but only about half of those upside down and a quarter of those flipped, because it is
often still sure of the lungs it draws there. This model looks at the whole content instead:
histograms of oriented gradients (scikit-image's HOG) of the content box resized to a 64-px
square (so a landscape or portrait box cannot tell it anything), plus an 8 x 8 thumbnail of it,
through a multinomial logistic regression over :data:`VIEWS`. It is trained on our own films,
each shown in every view (the label costs nothing), and measured leaving each source out
(:mod:`models.training.orientation`). Weights: plain JSON (standardisation, coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURE_SIZE = 64  # the content box is resized to this square before its HOG
THUMB = 8  # the thumbnail's side, in the same standardised grey
CELLS, BLOCK, BINS = 8, 2, 9  # HOG: CELLS x CELLS cells, blocks of BLOCK x BLOCK, BINS orientations
# HOG's length (every overlapping block of every cell's histogram), then the thumbnail
N_FEATURES = (CELLS - BLOCK + 1) ** 2 * BLOCK**2 * BINS + THUMB * THUMB
# The views the model tells apart; index 0 is upright. A mirrored film (left and right swapped)
# is upright here: it reads the same way up, and the lungs keep their names from the image side.
VIEWS: tuple[str, ...] = ("upright", "turned_90", "turned_180", "turned_270", "flipped")


def view(img: np.ndarray, k: int) -> np.ndarray:
    """``img`` as :data:`VIEWS` ``[k]`` would present it (the training labels)."""
    return np.ascontiguousarray([img, np.rot90(img, 1), np.rot90(img, 2), np.rot90(img, 3), img[::-1]][k])


def orientation_features(img8: np.ndarray, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """HOG of the content (``box``: r0, r1, c0, c1; default the whole image) resized to
    :data:`FEATURE_SIZE` and standardised, then its :data:`THUMB`-px thumbnail."""
    from skimage.feature import hog
    from skimage.transform import resize

    img = np.asarray(img8, np.float32)
    if box is not None:
        r0, r1, c0, c1 = box
        img = img[r0:r1, c0:c1]
    x = resize(img / 255.0, (FEATURE_SIZE, FEATURE_SIZE), anti_aliasing=True)
    x = (x - x.mean()) / (x.std() + 1e-6)
    cell = FEATURE_SIZE // CELLS
    grads = hog(x, orientations=BINS, pixels_per_cell=(cell, cell), cells_per_block=(BLOCK, BLOCK))
    thumb = resize(x, (THUMB, THUMB), anti_aliasing=True).ravel()
    return np.concatenate([grads, thumb]).astype(np.float32)


@dataclass(frozen=True)
class OrientationModel:
    """Standardisation and multinomial logistic coefficients over :data:`VIEWS`."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (len(VIEWS), n_features)
    intercept: np.ndarray

    def proba(self, feats: np.ndarray) -> np.ndarray:
        """(N, len(VIEWS)) probabilities of (N, n_features) :func:`orientation_features`."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def upright(self, img8: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
        """Probability that the film (a 256-px square and its content box) is upright."""
        return float(self.proba(orientation_features(img8, box))[0, 0])

    def to_json(self) -> dict[str, Any]:
        return {
            "views": list(VIEWS),
            "feature_size": FEATURE_SIZE,
            "thumb": THUMB,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OrientationModel:
        if tuple(d["views"]) != VIEWS or d["feature_size"] != FEATURE_SIZE or d["thumb"] != THUMB:
            raise ValueError("orientation model made for other views or features")
        model = cls(*(np.asarray(d[k], np.float64) for k in ("mean", "scale", "coef", "intercept")))
        n = N_FEATURES
        shapes = (model.mean.shape, model.scale.shape, model.coef.shape, model.intercept.shape)
        if shapes != ((n,), (n,), (len(VIEWS), n), (len(VIEWS),)):
            raise ValueError(f"orientation model arrays of shapes {shapes}, not for {n} features")
        if not all(np.isfinite(a).all() for a in (model.mean, model.scale, model.coef, model.intercept)):
            raise ValueError("orientation model arrays not finite")
        if not (model.scale > 0).all():
            raise ValueError("orientation model scale not positive")
        return model

    @classmethod
    def fit(cls, feats: np.ndarray, views: np.ndarray, c: float) -> OrientationModel:
        """scikit-learn's standardisation and multinomial logistic regression, kept as arrays."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(feats)
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(feats), views)
        if list(clf.classes_) != list(range(len(VIEWS))):
            raise ValueError("every view must be in the training data")
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return cls(scaler.mean_, scale, clf.coef_, clf.intercept_)
