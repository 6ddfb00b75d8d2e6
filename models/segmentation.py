"""Lung masks from LungNet's probability maps (:mod:`models.networks`)."""

from __future__ import annotations

from typing import Any

import numpy as np


def clean_lung_masks(prob: Any, threshold: float = 0.5) -> np.ndarray:
    """Threshold (2, H, W) lung probabilities; keep the largest component per lung, fill holes."""
    from scipy import ndimage

    prob = np.asarray(prob)
    out = np.zeros(prob.shape, dtype=bool)
    for k in range(prob.shape[0]):
        m = prob[k] > threshold
        labels, n = ndimage.label(m)
        if n > 1:
            sizes = ndimage.sum(m, labels, range(1, n + 1))
            m = labels == (int(np.argmax(sizes)) + 1)
        out[k] = ndimage.binary_fill_holes(m)
    return out
