"""Cohen et al. 2020 severity scores from lung and opacity masks.

Geographic extent (0-8) and opacity (0-6) are predicted by ridge regressions on
per-lung features: the opacity segmenter's involvement fractions (overall and
per lung third) and intensity statistics inside the predicted lungs, plus the
four logits of a backbone classifier trained without any scored patient. The
ridge coefficients are stored as JSON (no pickles). Per-lung scores apportion
the total by each lung's share of predicted involvement: the data has no
per-lung ground truth, so they are not validated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.result import LungSeverity, Severity

logger = logging.getLogger(__name__)

TARGETS = {"geographic_extent": 8.0, "opacity": 6.0}


def _lung_features(img: np.ndarray, lung: np.ndarray, opac: np.ndarray) -> list[float]:
    if lung.sum() < 20:
        return [0.0] * 10
    rows = np.nonzero(lung.any(axis=1))[0]
    thirds = np.array_split(np.arange(rows[0], rows[-1] + 1), 3)
    zone = []
    for t in thirds:
        z = np.zeros_like(lung)
        z[t] = lung[t]
        zone.append(float(opac[z].mean()) if z.any() else 0.0)
    vals = img[lung]
    return [
        float(opac[lung].mean()),
        float((opac[lung] > 0.5).mean()),
        *zone,
        float(vals.mean()),
        float(vals.std()),
        float(np.percentile(vals, 25)),
        float(np.percentile(vals, 75)),
        float(lung.mean()),
    ]


LOGIT_NAMES = [f"logit_{c}" for c in ("normal", "other_disease", "pneumonia", "covid19")]
FEATURE_NAMES = [
    f"{side}_{n}"
    for side in ("right", "left")
    for n in (
        "opac_mean",
        "opac_frac",
        "opac_upper",
        "opac_middle",
        "opac_lower",
        "int_mean",
        "int_std",
        "int_p25",
        "int_p75",
        "area",
    )
] + LOGIT_NAMES


def severity_features(
    image: np.ndarray, lungs: np.ndarray, opacity_prob: np.ndarray, logits: np.ndarray
) -> np.ndarray:
    """Feature vector (:data:`FEATURE_NAMES`) from a 256-px image (uint8 or [-1024, 1024]),
    lungs (2,H,W), opacity probability (H,W) and the backbone classifier's 4 logits."""
    img = np.asarray(image, np.float32)
    img = img / 255.0 if np.asarray(image).dtype == np.uint8 else (img + 1024.0) / 2048.0
    lungs = np.asarray(lungs).astype(bool)
    per_lung = _lung_features(img, lungs[0], opacity_prob) + _lung_features(img, lungs[1], opacity_prob)
    return np.array(per_lung + [float(v) for v in np.ravel(logits)], np.float32)


@dataclass
class RidgeModel:
    """Standardise then linear: ``y = (x - mean) / scale @ coef + intercept`` per target."""

    mean: np.ndarray
    scale: np.ndarray
    coef: dict[str, np.ndarray]
    intercept: dict[str, float]
    alpha: dict[str, float]

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        targets: dict[str, np.ndarray],
        alphas: tuple[float, ...] = (0.1, 1, 3, 10, 30, 100),
    ) -> RidgeModel:
        from sklearn.linear_model import RidgeCV

        mean = x.mean(0)
        scale = x.std(0) + 1e-6
        z = (x - mean) / scale
        coef, inter, alpha = {}, {}, {}
        for k, y in targets.items():
            r = RidgeCV(alphas=alphas).fit(z, y)
            coef[k], inter[k], alpha[k] = r.coef_.astype(np.float64), float(r.intercept_), float(r.alpha_)
        return cls(mean, scale, coef, inter, alpha)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return {k: np.clip(z @ self.coef[k] + self.intercept[k], 0.0, TARGETS[k]) for k in self.coef}

    def to_json(self) -> dict[str, Any]:
        return {
            "features": FEATURE_NAMES,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": {k: v.tolist() for k, v in self.coef.items()},
            "intercept": self.intercept,
            "alpha": self.alpha,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RidgeModel:
        return cls(
            np.array(d["mean"]),
            np.array(d["scale"]),
            {k: np.array(v) for k, v in d["coef"].items()},
            {k: float(v) for k, v in d["intercept"].items()},
            d.get("alpha", {}),
        )


def to_severity(pred: dict[str, np.ndarray], lungs: np.ndarray, opacity_prob: np.ndarray) -> Severity:
    """Totals from the ridge; per-lung scores by each lung's share of predicted involvement."""
    ext = float(np.ravel(pred["geographic_extent"])[0])
    opa = float(np.ravel(pred["opacity"])[0])
    lungs = np.asarray(lungs).astype(bool)
    inv = [float(opacity_prob[m].sum()) if m.any() else 0.0 for m in lungs]
    share = 0.5 if sum(inv) < 1e-3 else inv[0] / sum(inv)
    right = LungSeverity(min(4.0, ext * share), min(3.0, opa * share))
    left = LungSeverity(min(4.0, ext * (1 - share)), min(3.0, opa * (1 - share)))
    return Severity(ext, opa, right, left)
