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


class LungEvidence(torch.nn.Module):
    """LungNet's opacity inside the predicted lungs, as a model the explainers above can read.

    The round-3 classifier reads lung-restricted opacity (:mod:`models.evidence`), so the
    heatmap explains that: output column 0 is the logit of the mean opacity probability over
    the lungs (column 1 its negative, so that a softmax gives that probability back).
    ``features`` runs the encoder to stride 16, ``head`` the rest (Grad-CAM's split).
    """

    def __init__(self, net: Any, lungs: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.lungs = lungs  # (1, H, W) float: union of both lungs at the input size
        self._skips: list[torch.Tensor] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.net.encoder
        s0 = enc.stem(x / 1024.0)
        y = F.max_pool2d(s0, 2)
        skips = [s0]
        for stage in enc.stages[:3]:
            y = stage(y)
            skips.append(y)
        self._skips = skips[:3]  # strides 2, 4, 8
        return y

    def head(self, f3: torch.Tensor) -> torch.Tensor:
        from models.networks import OPACITY

        net = self.net
        y = net.lateral(net.encoder.stages[3](f3))
        s0, s1, s2 = (s.expand(f3.shape[0], -1, -1, -1) for s in self._skips)
        for block, skip in zip(net.dec, (f3, s2, s1, s0), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], 1))
        size = self.lungs.shape[-2:]
        maps = F.interpolate(net.maps(y), size=size, mode="bilinear", align_corners=False)
        opac = torch.sigmoid(maps[:, OPACITY])
        score = (opac * self.lungs).sum((1, 2)) / self.lungs.sum().clamp_min(1.0)
        logit = torch.logit(score.clamp(1e-4, 1 - 1e-4))
        return torch.stack([logit / 2, -logit / 2], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def explain_lungs(net: Any, x: torch.Tensor, lungs: np.ndarray, method: str = "gradcam") -> np.ndarray:
    """Heatmap of LungNet's lung-restricted opacity evidence for one (1, 1, H, W) input, kept to
    the predicted lungs (``lungs`` (2, H, W) bool): heat is shown only where the classifier reads."""
    union = np.asarray(lungs, bool).any(0)
    if not union.any():
        return np.zeros(union.shape, np.float32)
    mask = torch.from_numpy(union.astype(np.float32))[None].to(x.device)
    model = LungEvidence(net, mask).eval()
    if method == "occlusion":  # a whole LungNet pass per patch: 8 x 8 patches, not 20 x 20
        heat = occlusion(model, x, 0, patch=32, stride=32)
    else:
        heat = explain(model, x, 0, method)
    return to_unit(heat * union)
