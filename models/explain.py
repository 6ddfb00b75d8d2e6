"""Heatmaps for the classifier: Grad-CAM (default), blurred input-gradient saliency
(Cohen et al.: 5x5 Gaussian), occlusion sensitivity (Minaee et al.).

Each function takes the (1, C, H, W) classifier input and returns an (H, W)
float32 map in [0, 1]; :class:`models.inference.Analyzer` maps it back to
input resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

METHODS = ("gradcam", "saliency", "occlusion")


def to_unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float32)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo < 1e-12:
        return np.zeros_like(m, dtype=np.float32)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def gradcam(model: Any, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) on the last residual stage (``model.features`` / ``model.head``)."""
    model.eval()
    with torch.enable_grad():
        feats = model.features(x).detach().requires_grad_(True)
        logit = model.head(feats)[0, target]
        (grad,) = torch.autograd.grad(logit, feats)
    w = grad.mean(dim=(2, 3), keepdim=True)
    cam = (w * feats).sum(1, keepdim=True).detach()
    pos = F.relu(cam)
    if float(pos.max()) <= 0:  # no positive evidence: show magnitude rather than a blank map
        pos = cam.abs()
    up = F.interpolate(pos, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return to_unit(up[0, 0].cpu().numpy())


def saliency(model: torch.nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """|d logit / d image|, blurred with a 5x5 Gaussian (sigma 1), as in Cohen et al."""
    model.eval()
    with torch.enable_grad():
        xi = x.clone().requires_grad_(True)
        logit = model(xi)[0, target]
        (grad,) = torch.autograd.grad(logit, xi)
    g = grad[0, 0].abs().cpu().numpy()
    return to_unit(ndimage.gaussian_filter(g, sigma=1.0, truncate=2.0))  # 5x5 kernel


@torch.no_grad()
def occlusion(
    model: torch.nn.Module, x: torch.Tensor, target: int, patch: int = 24, stride: int = 12
) -> np.ndarray:
    """Drop in the target probability when a patch is blacked out (Zeiler & Fergus; Minaee et al.)."""
    model.eval()
    h, w = x.shape[-2:]
    base = float(torch.softmax(model(x), 1)[0, target].cpu())
    heat = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    boxes = [(r, c) for r in range(0, h - patch + 1, stride) for c in range(0, w - patch + 1, stride)]
    for i in range(0, len(boxes), 64):
        chunk = boxes[i : i + 64]
        xb = x.repeat(len(chunk), 1, 1, 1)
        for j, (r, c) in enumerate(chunk):
            xb[j, 0, r : r + patch, c : c + patch] = -1024.0
        probs = torch.softmax(model(xb), 1)[:, target].cpu().numpy()
        for j, (r, c) in enumerate(chunk):
            heat[r : r + patch, c : c + patch] += base - probs[j]
            count[r : r + patch, c : c + patch] += 1
    mean_drop = heat / np.maximum(count, 1)
    heat = mean_drop.astype(np.float32)
    return to_unit(np.clip(heat, 0, None) if heat.max() > 0 else np.abs(heat))


def explain(model: torch.nn.Module, x: torch.Tensor, target: int, method: str = "gradcam") -> np.ndarray:
    """Dispatch to one of :data:`METHODS`."""
    if method == "gradcam":
        return gradcam(model, x, target)
    if method == "saliency":
        return saliency(model, x, target)
    if method == "occlusion":
        return occlusion(model, x, target)
    raise ValueError(f"unknown heatmap method {method!r}; choose one of {METHODS}")
