"""What the round-3 classifier reads: LungNet's opacity inside the predicted lungs.

The image-level classifier of round 2 learned the *source* of a film (leave-one-source-out
AUCs 0.3-0.8). What LungNet learned about lung opacity transfers, so the classifier now reads
a handful of lung-restricted opacity measures (:func:`opacity_features`) and the severity
ridge's two totals (Cohen's extent 0-8 and opacity 0-6, :data:`SEVERITY_INPUTS`), and nothing
else: no lung area, no intensity statistics, no class logits. The severity totals were fitted
to radiologists' scores, never to a class or a source; of everything measured they transfer
best (severity extent alone ranks COVID-19 above other hospitals' normals better than any
classifier trained on the classes).

Every image goes through one resolution chain before LungNet (:func:`resolution_chain`):
the 256-px square down to 224 px and back, so that a folder that was already 224 px
cannot be told apart by its sharpness.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

CHAIN_SIZE = 224
# LungNet's opacity inside the lungs, in this order (``log`` of involvement + 0.01: skewed).
OPACITY_FEATURES: tuple[str, ...] = (
    "involvement",  # mean opacity probability over both lungs
    "involved_fraction",  # fraction of lung pixels with opacity > 0.5
    "less_involved_lung",  # the lower of the two lungs' involvement (bilateral disease)
    "more_involved_lung",
    "lower_zones",  # involvement of the lower third of each lung
    "upper_zones",
    "peripheral_minus_central",  # outer half of each lung (by distance to its edge) minus inner half
    "zones_involved",  # of six zones (three per lung), those with involvement > 0.25
)
# The severity ridge's totals (Cohen's extent 0-8 and opacity 0-6).
SEVERITY_INPUTS: tuple[str, ...] = ("geographic_extent_total", "opacity_total")
# The classifier's inputs, in this order.
FEATURES: tuple[str, ...] = OPACITY_FEATURES + SEVERITY_INPUTS
# Columns of FEATURES taken on a log scale: all but the two shape measures.
LOGGED: tuple[int, ...] = tuple(
    i for i, f in enumerate(FEATURES) if f not in ("peripheral_minus_central", "zones_involved")
)


def resolution_chain(img8: np.ndarray, size: int = CHAIN_SIZE) -> np.ndarray:
    """The 256-px uint8 square down to ``size`` (area average) and back up (bilinear)."""
    n = img8.shape[0]
    small = Image.fromarray(np.asarray(img8, np.uint8)).resize((size, size), Image.Resampling.BOX)
    return np.asarray(small.resize((n, n), Image.Resampling.BILINEAR), np.uint8)


def _mean(opac: np.ndarray, mask: np.ndarray) -> float:
    return float(opac[mask].mean()) if mask.any() else 0.0


def _zones(lung: np.ndarray) -> list[np.ndarray]:
    rows = np.nonzero(lung.any(axis=1))[0]
    out = []
    for t in np.array_split(np.arange(rows[0], rows[-1] + 1), 3):
        z = np.zeros_like(lung)
        z[t] = lung[t]
        out.append(z)
    return out


def opacity_features(opac: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """:data:`OPACITY_FEATURES` of one image from LungNet's opacity map (H, W) and cleaned lungs (2, H, W)."""
    opac = np.asarray(opac, np.float32)
    lungs = np.asarray(lungs, bool)
    union: np.ndarray = np.asarray(lungs.any(0))
    if union.sum() < 20:
        return np.zeros(len(OPACITY_FEATURES), np.float32)
    per_lung, lower, upper, zone_means, periph = [], [], [], [], []
    for lung in lungs:
        if lung.sum() < 20:
            per_lung.append(0.0)
            continue
        per_lung.append(_mean(opac, lung))
        zones = _zones(lung)
        zm = [_mean(opac, z) for z in zones]
        zone_means += zm
        upper.append(zm[0])
        lower.append(zm[2])
        dist = ndimage.distance_transform_edt(lung)
        inside = dist[lung]
        outer = lung & (dist <= np.median(inside))
        periph.append(_mean(opac, outer) - _mean(opac, lung & ~outer))
    feats = [
        _mean(opac, union),
        float((opac[union] > 0.5).mean()),
        min(per_lung),
        max(per_lung),
        float(np.mean(lower)) if lower else 0.0,
        float(np.mean(upper)) if upper else 0.0,
        float(np.mean(periph)) if periph else 0.0,
        float(sum(z > 0.25 for z in zone_means)),
    ]
    return np.asarray(feats, np.float32)


def classifier_inputs(opacity: np.ndarray, extent: np.ndarray, opacity_score: np.ndarray) -> np.ndarray:
    """:data:`FEATURES` (N, 10): the opacity features (N, 8) and the severity totals (N,) each."""
    return np.c_[np.atleast_2d(opacity), np.ravel(extent), np.ravel(opacity_score)].astype(np.float64)


def transform(feats: np.ndarray) -> np.ndarray:
    """The classifier's design matrix: the involvement measures and the severity totals on a log
    scale (``log(x + 0.01)``, :data:`LOGGED`; all are skewed towards 0). Works on the eight
    :data:`OPACITY_FEATURES` alone too (the columns they share)."""
    x = np.asarray(feats, np.float64).copy()
    cols = [c for c in LOGGED if c < x.shape[-1]]
    x[..., cols] = np.log(np.clip(x[..., cols], 0.0, None) + 0.01)
    return x


class OpacityClassifier:
    """Multinomial logistic regression on :data:`FEATURES` (coefficients stored as JSON):
    the opacity inside the lungs and the severity totals.

    ``p = softmax(((transform(f) - mean) / scale) @ coef.T + intercept) / temperature)``.

    ``without_totals``: the same regression on the eight opacity measures alone, for a film whose
    severity totals the quality check withheld (its lung outline failed): its class is then read
    without the withheld numbers (``predict_proba(..., withheld=...)``).
    """

    training = False  # like the torch models: never in training mode at inference

    def __init__(
        self,
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        temperature: float = 1.0,
        features: tuple[str, ...] = FEATURES,
        without_totals: OpacityClassifier | None = None,
    ) -> None:
        self.mean = np.asarray(mean, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.coef = np.asarray(coef, np.float64)
        self.intercept = np.asarray(intercept, np.float64)
        self.temperature = float(temperature)
        self.features = tuple(features)
        self.without_totals = without_totals

    def logits_with(self, feats: np.ndarray, withheld: np.ndarray | None = None) -> np.ndarray:
        """:meth:`logits`, those of the ``withheld`` rows (severity totals withheld) from
        :attr:`without_totals` on the opacity measures alone."""
        feats = np.atleast_2d(feats)
        out = self.logits(feats)
        if withheld is not None and self.without_totals is not None and np.any(withheld):
            rows = np.asarray(withheld, bool)
            out[rows] = self.without_totals.logits(feats[rows][:, : len(OPACITY_FEATURES)])
        return out

    def logits(self, feats: np.ndarray) -> np.ndarray:
        z = (transform(np.atleast_2d(feats)) - self.mean) / self.scale
        return z @ self.coef.T + self.intercept

    def predict_proba(self, feats: np.ndarray, withheld: np.ndarray | None = None) -> np.ndarray:
        lg = self.logits_with(feats, withheld) / self.temperature
        lg -= lg.max(1, keepdims=True)
        e = np.exp(lg)
        return e / e.sum(1, keepdims=True)

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {
            "kind": "multinomial logistic regression on lung-restricted opacity"
            + (" and the severity totals" if self.features == FEATURES else ""),
            "features": list(self.features),
            "transform": "log(max(x, 0) + 0.01) on all features but peripheral_minus_central and "
            "zones_involved, then (x - mean) / scale",
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "temperature": self.temperature,
        }
        if self.without_totals is not None:
            d["without_totals"] = self.without_totals.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, object], features: tuple[str, ...] = FEATURES) -> OpacityClassifier:
        feats = d.get("features") or features
        if tuple(feats) != features:  # type: ignore[arg-type]
            raise ValueError(f"classifier features {feats} do not match this code's {features}")
        sub = d.get("without_totals")
        return cls(
            np.array(d["mean"]),
            np.array(d["scale"]),
            np.array(d["coef"]),
            np.array(d["intercept"]),
            float(d.get("temperature", 1.0)),  # type: ignore[arg-type]
            features,
            cls.from_json(sub, OPACITY_FEATURES) if isinstance(sub, dict) else None,
        )
