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
(:class:`ChestLikeness`): a gradient, a tibia, a smooth random texture or a film shown through a
window that whites it out gets lungs from LungNet, and a class and a severity read off them,
unless something stops it. Two measures: how far the film is from every chest film trained on (a
PCA distance), and how much more it looks like generated pictures than like those films
(:class:`OtherImages`).
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


def _standardised_logistic(
    x: np.ndarray, y: np.ndarray, c: float, max_iter: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, Any]:
    """scikit-learn's standardisation and logistic regression (inverse L2 strength ``c``) of
    ``x`` on ``y``: the mean, the scale (1 where a column is constant) and the fitted classifier."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(x), y, sample_weight=weights)
    return scaler.mean_, np.where(scaler.scale_ > 0, scaler.scale_, 1.0), clf


@dataclass(frozen=True)
class OtherImages:
    """The probability that a film's :func:`orientation_features` are those of something other than
    a chest film: a logistic regression of the upright chest films of the training sources, and
    of the same films tilted, cropped tight, collimated or windowed otherwise
    (:mod:`models.training.altered`), against generated pictures (:mod:`models.training.textures`:
    smooth noise, clouds, blobs, gratings, ramps, shapes), the two sides weighing the same.
    ``cut``: the probability at which a film counts as unlike a chest film. The PCA distance of
    :class:`ChestLikeness` is far from everything it was fitted on; this is what a smooth
    texture, close enough to a film's grey to pass that distance, is unlike."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (n_features,)
    intercept: float
    cut: float

    def proba(self, feats: np.ndarray) -> np.ndarray:
        """(N,) probabilities that (N, n_features) features are not a chest film's."""
        from scipy.special import expit

        return np.asarray(expit((np.atleast_2d(feats) - self.mean) / self.scale @ self.coef + self.intercept))

    @classmethod
    def fit(cls, films: np.ndarray, others: np.ndarray, c: float, cut: float) -> OtherImages:
        """:func:`_standardised_logistic` of the films against the others, kept as arrays; each
        side weighs half."""
        x = np.vstack([films, others])
        y = np.r_[np.zeros(len(films)), np.ones(len(others))]
        weights = np.where(y == 0, len(y) / (2 * len(films)), len(y) / (2 * len(others)))
        mean, scale, clf = _standardised_logistic(x, y, c, 5000, weights)
        return cls(mean, scale, clf.coef_[0], float(clf.intercept_[0]), float(cut))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "cut": self.cut,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OtherImages:
        mean, scale, coef = _arrays(d, ("mean", "scale", "coef"), "other-images")
        n = N_FEATURES
        if (mean.shape, scale.shape, coef.shape) != ((n,), (n,), (n,)):
            raise ValueError(f"other-images arrays not for {n} features")
        intercept, cut = float(d["intercept"]), float(d["cut"])
        if not ((scale > 0).all() and np.isfinite(intercept) and 0 < cut < 1):
            raise ValueError("other-images scale must be positive, its intercept finite, its cut in (0, 1)")
        return cls(mean, scale, coef, intercept, cut)


@dataclass(frozen=True)
class ChestLikeness:
    """How unlike the upright chest films of the training sources a film's
    :func:`orientation_features` are: a probabilistic PCA of those films' standardised features
    (:data:`N_COMPONENTS` components, the rest as isotropic noise) and the squared Mahalanobis
    distance under it, over ``limit``. ``limit`` is the largest distance of any training film with its own
    source left out, plus a tenth (:mod:`models.training.orientation`): a film beyond it is unlike
    every film of seven hospitals. ``other``: the :class:`OtherImages` of the same films, read
    beside the distance (:meth:`atypical`)."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray  # (N_COMPONENTS, n_features), orthonormal rows
    variances: np.ndarray  # (N_COMPONENTS,)
    noise: float  # the variance left to each other direction
    limit: float
    other: OtherImages | None = None  # None: the distance alone (fitting, measuring it)

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """(N,) squared Mahalanobis distances of (N, n_features) features."""
        z = (np.atleast_2d(feats) - self.mean) / self.scale
        proj = z @ self.components.T
        inside = (proj**2).sum(axis=1)
        return np.asarray((proj**2 / self.variances).sum(axis=1) + ((z**2).sum(axis=1) - inside) / self.noise)

    def atypical(self, feats: np.ndarray) -> np.ndarray:
        """(N,) the larger of :meth:`distance` over ``limit`` and :meth:`OtherImages.proba` over
        its ``cut``: 1 or more, unlike any chest film trained on, or like the other pictures."""
        ratio = self.distance(feats) / self.limit
        if self.other is None:
            return ratio
        return np.asarray(np.fmax(ratio, self.other.proba(feats) / self.other.cut))

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
            **({"other": self.other.to_json()} if self.other is not None else {}),
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
        if "other" not in d:
            raise ValueError("chest-likeness without its other-images measure (made before version 1.2)")
        return cls(mean, scale, comp, var, noise, limit, OtherImages.from_json(d["other"]))


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
        """:func:`_standardised_logistic` over the views (multinomial), kept as arrays;
        ``chest``: the chest-likeness fitted on the same films upright."""
        mean, scale, clf = _standardised_logistic(feats, views, c, 2000)
        if list(clf.classes_) != list(range(len(VIEWS))):
            raise ValueError("every view must be in the training data")
        return cls(mean, scale, clf.coef_, clf.intercept_, chest)
