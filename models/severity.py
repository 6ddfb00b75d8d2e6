"""Cohen et al. 2020 severity scores (geographic extent 0-8, opacity 0-6) from per-lung features.

Features of each lung (:func:`severity_matrix`): LungNet's opacity
involvement (overall and per lung third), intensity statistics, area, half of
the four class logits, and LungNet's encoder features averaged over the lung.
A per-lung additive ridge (:class:`LungRidge`) turns them into scores; its
coefficients are stored as JSON (no pickles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def scalar_lung_features(img8: np.ndarray, lung: np.ndarray, opac: np.ndarray) -> list[float]:
    """Involvement (overall, per third), intensity statistics and area of one lung."""
    if lung.sum() < 20:
        return [0.0] * 10
    rows = np.nonzero(lung.any(axis=1))[0]
    zone = []
    for t in np.array_split(np.arange(rows[0], rows[-1] + 1), 3):
        z = np.zeros_like(lung)
        z[t] = lung[t]
        zone.append(float(opac[z].mean()) if z.any() else 0.0)
    vals = img8[lung].astype(np.float32) / 255.0
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


def severity_matrix(images8: np.ndarray, pred: dict[str, np.ndarray], pooled: bool = True) -> np.ndarray:
    """Per-lung features (N, 2, F) from :func:`models.segmentation.lungnet_outputs`: scalar
    involvement/intensity features, the four class logits (half to each lung) and, with
    ``pooled``, the encoder features averaged over the lung."""
    from models.networks import OPACITY

    rows = []
    for j, img in enumerate(images8):
        opac = pred["maps"][j][OPACITY].astype(np.float32)
        per = []
        for k in range(2):
            f = scalar_lung_features(img, pred["lungs"][j][k].astype(bool), opac)
            f += list(pred["logits"][j] / 2.0)
            if pooled:
                f += list(pred["pooled"][j][k])
            per.append(f)
        rows.append(per)
    return np.asarray(rows, np.float32)


PER_LUNG_MAX = {"geographic_extent": 4.0, "opacity": 3.0}
# A score under this reads 0.0 at the one decimal the SR and SC show: the lung is clear by it.
CLEAR_BELOW = 0.05


def clear_together(pred: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """:meth:`LungRidge.predict`'s output as reported (:meth:`LungRidge.report`), as new arrays:
    a lung clear by either score is clear by both, the totals the sums of the lungs."""
    clear = {
        side: np.logical_or.reduce([pred[k][side] < CLEAR_BELOW for k in pred]) for side in ("right", "left")
    }
    out = {}
    for k, scores in pred.items():
        right, left = (np.where(clear[side], 0.0, scores[side]) for side in ("right", "left"))
        out[k] = {"right": right, "left": left, "total": right + left}
    return out


@dataclass
class LungRidge:
    """Per-lung additive ridge: ``score(lung) = (phi(lung) - mean / 2) / scale @ coef + intercept / 2``.

    Fitted on the sum of both lungs' features against the image's total score,
    so the per-lung scores are learned (their sum is the fitted total) rather
    than apportioned afterwards; each lung is clipped to Cohen's per-lung range
    (extent 0-4, opacity 0-3) and the total is the sum of the clipped lungs. :meth:`report` is
    what the node reports: a lung clear by either score is clear by both.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: dict[str, np.ndarray]
    intercept: dict[str, float]
    alpha: dict[str, float]

    @classmethod
    def fit(
        cls,
        feats: np.ndarray,
        targets: dict[str, np.ndarray],
        alphas: tuple[float, ...] = (0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000),
    ) -> LungRidge:
        from sklearn.linear_model import RidgeCV

        x = feats[:, 0] + feats[:, 1]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        coef, inter, alpha = {}, {}, {}
        for k, y in targets.items():
            r = RidgeCV(alphas=alphas).fit(z, y)
            coef[k], inter[k], alpha[k] = r.coef_.astype(np.float64), float(r.intercept_), float(r.alpha_)
        return cls(mean, scale, coef, inter, alpha)

    def predict(self, feats: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        feats = np.asarray(feats, np.float64)
        if feats.ndim == 2:
            feats = feats[None]
        out = {}
        for k in self.coef:
            per = [
                np.clip(
                    ((feats[:, j] - self.mean / 2) / self.scale) @ self.coef[k] + self.intercept[k] / 2,
                    0,
                    PER_LUNG_MAX[k],
                )
                for j in (0, 1)
            ]
            out[k] = {"right": per[0], "left": per[1], "total": per[0] + per[1]}
        return out

    def report(self, feats: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """:meth:`predict` as the node reports it: a lung that either score calls clear (under
        :data:`CLEAR_BELOW`, 0.0 as the report shows it) is clear in both (extent 0.0 with opacity
        0.4 would say two things of one lung), and the totals are the sums of the lungs so
        reported. The classifier reads :meth:`predict`'s totals, as it was fitted (a
        sub-threshold opacity still tells it something)."""
        return clear_together(self.predict(feats))

    def to_json(self, feature_names: list[str] | None = None) -> dict[str, Any]:
        return {
            "kind": "per-lung additive ridge",
            "features": feature_names,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": {k: v.tolist() for k, v in self.coef.items()},
            "intercept": self.intercept,
            "alpha": self.alpha,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LungRidge:
        return cls(
            np.array(d["mean"]),
            np.array(d["scale"]),
            {k: np.array(v) for k, v in d["coef"].items()},
            {k: float(v) for k, v in d["intercept"].items()},
            d.get("alpha", {}),
        )
