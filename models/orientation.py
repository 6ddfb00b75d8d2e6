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

The same features also say whether the input looks like the chest films the models know at all
(:class:`ChestLikeness`): a gradient, a tibia or a film shown through a window that whites it out
gets lungs from LungNet, and a class and a severity read off them, unless something stops it.
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


def _arrays(d: dict[str, Any], keys: tuple[str, ...], what: str) -> list[np.ndarray]:
    """``d[key]`` as float arrays, each finite (a model's JSON)."""
    arrays = [np.asarray(d[k], np.float64) for k in keys]
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError(f"{what} arrays not finite")
    return arrays


N_COMPONENTS = 16  # principal components of the upright chest films' features


@dataclass(frozen=True)
class ChestLikeness:
    """How unlike the upright chest films of the training sources a film's
    :func:`orientation_features` are: a probabilistic PCA of those films' standardised features
    (:data:`N_COMPONENTS` components, the rest as isotropic noise) and the squared Mahalanobis
    distance under it, over ``limit``. ``limit`` is the largest distance of any training film with its own
    source left out, plus a tenth (:mod:`models.training.orientation`): a film beyond it is unlike
    every film of seven hospitals."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (N_COMPONENTS, n_features), orthonormal rows
    variances: np.ndarray  # (N_COMPONENTS,)
    noise: float  # the variance left to each other direction
    limit: float

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distances of (N, n_features) features."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale
        proj = z @ self.components.T
        inside = (proj**2).sum(axis=1)
        return np.asarray((proj**2 / self.variances).sum(axis=1) + ((z**2).sum(axis=1) - inside) / self.noise)

    def atypical(self, feats: np.ndarray) -> np.ndarray:
        """(N,) :meth:`distance` over ``limit``: 1 or more, unlike any chest film trained on."""
        return self.distance(feats) / self.limit

    @classmethod
    def fit(cls, feats: np.ndarray, limit: float = np.inf) -> ChestLikeness:
        """The PCA of upright films' features (``limit`` is set afterwards, from held-out films)."""
        if len(feats) <= 2 * N_COMPONENTS:
            raise ValueError(
                f"chest-likeness fitted on {len(feats)} films: needs more than {2 * N_COMPONENTS}"
            )
        mean, scale = feats.mean(axis=0), feats.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        z = (feats - mean) / scale
        _, sv, vt = np.linalg.svd(z, full_matrices=False)
        var = sv**2 / (len(z) - 1)
        noise = float(var[N_COMPONENTS:].sum() / (z.shape[1] - N_COMPONENTS))
        return cls(mean, scale, vt[:N_COMPONENTS], var[:N_COMPONENTS], noise, float(limit))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "components": self.components.tolist(),
            "variances": self.variances.tolist(),
            "noise": self.noise,
            "limit": self.limit,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ChestLikeness:
        mean, scale, comp, var = _arrays(d, ("mean", "scale", "components", "variances"), "chest-likeness")
        n = N_FEATURES
        shapes = (mean.shape, scale.shape, comp.shape, var.shape)
        if shapes != ((n,), (n,), (N_COMPONENTS, n), (N_COMPONENTS,)):
            raise ValueError(f"chest-likeness arrays of shapes {shapes}, not for {n} features")
        noise, limit = float(d["noise"]), float(d["limit"])
        if not ((scale > 0).all() and (var > 0).all() and 0 < noise < np.inf and 0 < limit < np.inf):
            raise ValueError("chest-likeness scale, variances, noise and limit must be positive and finite")
        return cls(mean, scale, comp, var, noise, limit)


@dataclass(frozen=True)
class OrientationModel:
    """Standardisation and multinomial logistic coefficients over :data:`VIEWS`, and the
    :class:`ChestLikeness` of the same features."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (len(VIEWS), n_features)
    intercept: np.ndarray
    chest: ChestLikeness

    def proba(self, feats: np.ndarray) -> np.ndarray:
        """(N, len(VIEWS)) probabilities of (N, n_features) :func:`orientation_features`."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True))

    def upright(self, img8: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
        """Probability that the film (a 256-px square and its content box) is upright."""
        return self.read(img8, box)[0]

    def read(self, img8: np.ndarray, box: tuple[int, int, int, int] | None = None) -> tuple[float, float]:
        """The film's probability of upright and its :meth:`ChestLikeness.atypical` (one set of
        features for both)."""
        feats = orientation_features(img8, box)
        return float(self.proba(feats)[0, 0]), float(self.chest.atypical(feats)[0])

    def to_json(self) -> dict[str, Any]:
        return {
            "views": list(VIEWS),
            "feature_size": FEATURE_SIZE,
            "thumb": THUMB,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "chest": self.chest.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OrientationModel:
        if tuple(d["views"]) != VIEWS or d["feature_size"] != FEATURE_SIZE or d["thumb"] != THUMB:
            raise ValueError("orientation model made for other views or features")
        if "chest" not in d:
            raise ValueError("orientation model without its chest-likeness (made before version 1.1)")
        mean, scale, coef, intercept = _arrays(d, ("mean", "scale", "coef", "intercept"), "orientation model")
        n = N_FEATURES
        shapes = (mean.shape, scale.shape, coef.shape, intercept.shape)
        if shapes != ((n,), (n,), (len(VIEWS), n), (len(VIEWS),)):
            raise ValueError(f"orientation model arrays of shapes {shapes}, not for {n} features")
        if not (scale > 0).all():
            raise ValueError("orientation model scale not positive")
        return cls(mean, scale, coef, intercept, ChestLikeness.from_json(d["chest"]))

    @classmethod
    def fit(cls, feats: np.ndarray, views: np.ndarray, c: float, chest: ChestLikeness) -> OrientationModel:
        """scikit-learn's standardisation and multinomial logistic regression, kept as arrays;
        ``chest``: the chest-likeness fitted on the same films upright."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(feats)
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(feats), views)
        if list(clf.classes_) != list(range(len(VIEWS))):
            raise ValueError("every view must be in the training data")
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        return cls(scaler.mean_, scale, clf.coef_, clf.intercept_, chest)
