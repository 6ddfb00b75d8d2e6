"""Lung masks, and everything else the node reads off LungNet (:mod:`models.networks`)."""

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


def lungnet_outputs(net: Any, x: Any, mirror: bool = False) -> dict[str, np.ndarray]:
    """One LungNet pass over ``x`` (N, 1, 256, 256): sigmoid maps (N, 5, H, W), class logits
    (N, 4), cleaned lung masks (N, 2, H, W) and encoder features pooled over each lung (N, 2, C).
    Training, evaluation and the node all go through here.

    ``mirror``: test-time flip, measured and not served (the classification card's model
    selection): the maps and logits are averaged with those of a second pass over ``x`` mirrored
    left to right, whose maps are mirrored back with each right- and left-lung channel swapped."""
    import torch

    from models.networks import LUNG_PAIRS, V7_LEFT, V7_RIGHT, lung_features

    with torch.no_grad():
        out, logits, feats = net.forward_all(x)
        prob = torch.sigmoid(out).float().cpu().numpy()
        if mirror:
            out_m, logits_m, _ = net.forward_all(torch.flip(x, dims=[-1]))
            prob_m = torch.sigmoid(torch.flip(out_m, dims=[-1])).float().cpu().numpy()
            for a, b in LUNG_PAIRS:
                prob_m[:, [a, b]] = prob_m[:, [b, a]]
            prob, logits = (prob + prob_m) / 2, (logits + logits_m) / 2
        lungs = np.stack([clean_lung_masks(p[[V7_RIGHT, V7_LEFT]]) for p in prob])
        masks = torch.from_numpy(lungs).float().to(x.device)
        pooled = lung_features([f.float() for f in feats], masks).cpu().numpy()
    return {"maps": prob, "logits": logits.float().cpu().numpy(), "pooled": pooled, "lungs": lungs}
