"""Training loops shared by the three models: augmentation, segmenters, splits.

Augmentations follow the radiologist-approved list in Keidar et al. (small
rotations, shifts, zoom, brightness/contrast); no flips, which would also
swap the patient's right and left lungs.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Fix every RNG and the CPU thread count (default 2, or ``CXR_NODE_TORCH_THREADS``)."""
    import os

    threads = threads or int(os.environ.get("CXR_NODE_TORCH_THREADS", "2"))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def augment(
    x: torch.Tensor,
    masks: torch.Tensor | None,
    gen: torch.Generator,
    rotate_deg: float = 10.0,
    shift: float = 0.08,
    zoom: float = 0.1,
    photometric: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random affine (rotation, shift, zoom) and brightness/contrast on a batch.

    ``x`` holds intensities in [-1024, 1024] (padding value -1024); extra
    channels of ``x`` (a lung mask) and ``masks`` get the same geometry.
    """
    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotate_deg)
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * zoom
    tx, ty = (torch.rand(2, n, generator=gen) * 2 - 1) * shift * 2
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    img = F.grid_sample(x[:, :1] + 1024.0, grid, align_corners=False) - 1024.0
    if photometric:
        contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.2
        bright = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.1 * 1024
        img = ((img + 1024.0) * contrast - 1024.0 + bright).clamp(-1024.0, 1024.0)
    parts = [img]
    if x.shape[1] > 1:
        parts.append(F.grid_sample(x[:, 1:], grid, align_corners=False))
    out = torch.cat(parts, 1)
    if masks is not None:
        masks = (F.grid_sample(masks, grid, align_corners=False) > 0.5).float()
    return out, masks


def train_segmenter(
    model: torch.nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 8,
    lr: float = 3e-3,
    pos_weight: float = 1.0,
    desc: str = "segmentation",
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train a segmenter with BCE + soft Dice; ``images`` uint8 (N,H,W), ``targets`` (N,C,H,W)."""
    from tqdm import tqdm

    from models.segmentation import dice_loss

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    pw = torch.tensor(pos_weight)
    t0 = time.time()
    loss_ep = float("nan")
    for ep in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen).numpy()
        losses = []
        bar = tqdm(range(0, len(order), batch_size), desc=f"{desc} {ep + 1}/{epochs}", leave=False)
        for i in bar:
            idx = np.sort(order[i : i + batch_size])
            x = torch.from_numpy(images[idx]).float()[:, None] / 127.5 * 1024.0 - 1024.0
            y = torch.from_numpy(targets[idx]).float()
            x, y_aug = augment(x, y, gen)
            assert y_aug is not None
            y = y_aug
            logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw) + dice_loss(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        loss_ep = float(np.mean(losses))
        logger.info("%s epoch %d/%d loss %.4f (%.0f s)", desc, ep + 1, epochs, loss_ep, time.time() - t0)
        if on_epoch:
            on_epoch(ep, loss_ep)
    return {"final_loss": loss_ep, "seconds": time.time() - t0}


@torch.no_grad()
def predict_batches(model: torch.nn.Module, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Sigmoid outputs for uint8 images (N,H,W) or float inputs already scaled (N,C,H,W)."""
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.asarray(x[i : i + batch_size]))
        if xb.dtype == torch.uint8:
            xb = xb.float()[:, None] / 127.5 * 1024.0 - 1024.0
        outs.append(torch.sigmoid(model(xb.float())).numpy())
    return np.concatenate(outs)


def save_state(model: torch.nn.Module, path: str | object) -> str:
    """Save a state_dict (CPU tensors only) and return its SHA-256."""
    import hashlib
    from pathlib import Path

    path = Path(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
