"""Metrics: Dice, Hausdorff distance, bootstrap AUC CIs, regression scores, splits."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)


def _boundary(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, bool)
    return np.argwhere(m & ~ndimage.binary_erosion(m))


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between mask boundaries, in pixels (nan if one is empty)."""
    pa, pb = _boundary(a), _boundary(b)
    if len(pa) == 0 or len(pb) == 0:
        return float("nan")
    return float(max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0]))


def mean_std(values: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4), "n": int(len(v))}


def bootstrap_ci(
    y: np.ndarray,
    s: np.ndarray,
    metric,
    n_boot: int = 1000,
    seed: int = 0,  # type: ignore[no-untyped-def]
) -> dict[str, object]:
    """Point value and percentile 95% bootstrap CI of ``metric(y, s)`` over images."""
    rng = np.random.default_rng(seed)
    value = float(metric(y, s))
    vals = []
    n = len(y)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if len(np.unique(y[idx])) < 2:
            continue
        vals.append(metric(y[idx], s[idx]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return {"value": round(value, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def regression_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Pearson r, R², MAE and MSE (Cohen et al. report all four)."""
    y = np.asarray(y, float)
    p = np.asarray(p, float)
    r = float(np.corrcoef(y, p)[0, 1]) if np.std(p) > 0 else float("nan")
    ss_res = float(((y - p) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {
        "pearson": r,
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        "mae": float(np.abs(y - p).mean()),
        "mse": float(((y - p) ** 2).mean()),
    }


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, C)."""
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)
