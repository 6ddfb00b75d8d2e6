"""Fit every model from the corpus cache and evaluate each on data it never saw.

One command does it all, on a GPU when there is one (about 8 minutes on one
H100) or on the CPU (hours)::

    python -m models.training.fit --cache corpus256.npz --out OUTDIR

Steps, each written to ``OUTDIR/fit.json`` as it finishes:

1. **Pretraining** (SimCLR) of :class:`models.networks.Encoder` on every image
   whose patient has no severity score; labels unused.
2. **LungNet** from the pretrained encoder and from scratch, on images of
   patients that are neither severity-scored nor in the segmentation hold-out
   (15 % of the patients of each source, by a fixed hash of the patient id).
   Lung masks: V7 and radiologists' masks train the V7 head, NLM masks the NLM
   head (the styles never mixed); radiologists' opacity masks train the opacity
   map; class labels train the four-class head. Dice and Hausdorff per source
   on the hold-out.
3. **Classifier** on lung crops: patient-grouped, class-stratified 5-fold CV
   from the pretrained encoder and from scratch, then the shipped model on all
   labelled images; temperature scaling cross-fitted on the out-of-fold logits;
   per-source and leave-one-source-out AUCs; a linear probe telling the source
   from the classifier's embedding (the shortcut); Grad-CAM heat inside the lungs.
4. **Severity**: per-lung features from LungNet (never trained on a scored
   patient) and a per-lung additive ridge refitted inside every split (Cohen's
   50 random 50/50 splits on the 94; patient-grouped 5-fold CV on all 234).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from models.networks import (
    NLM_LEFT,
    NLM_RIGHT,
    OPACITY,
    V7_LEFT,
    V7_RIGHT,
    CropClassifier,
    Encoder,
    LungNet,
)
from models.preprocessing import network_input
from models.result import CLASSES
from models.severity import severity_matrix
from models.training.corpus import (
    SOURCES,
    STYLE_NLM,
    STYLE_NONE,
    load_cache,
    scored,
    scored_patients,
    severity_targets,
)
from models.training.evaluation import softmax

logger = logging.getLogger(__name__)

HOLDOUT_PERCENT = 15
N_FOLDS = 5


class Plan:
    """Epochs and sizes; ``quick`` shrinks everything for a CPU smoke test."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.pretrain_steps = 4 if quick else 1500
        self.pretrain_batch = 16 if quick else 512
        self.pretrain_size = 64 if quick else 160
        self.lung_epochs = 1 if quick else 45
        self.lung_batch = 8 if quick else 48
        self.cls_epochs = 1 if quick else 30
        self.cls_batch = 16 if quick else 128
        self.severity_splits = 5 if quick else 50


# --- splits ------------------------------------------------------------------------------


def in_holdout(patients: np.ndarray, percent: int = HOLDOUT_PERCENT) -> np.ndarray:
    """Stable patient-level hold-out: md5 of the patient id modulo 100 below ``percent``."""
    return np.array([int(hashlib.md5(p.encode()).hexdigest(), 16) % 100 < percent for p in patients])


def segmentation_holdout(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Images held out of LungNet: severity-scored patients and the hashed 15 %."""
    return scored_patients(arrays) | in_holdout(arrays["patient"])


def class_folds(arrays: dict[str, np.ndarray], idx: np.ndarray, seed: int = 0) -> np.ndarray:
    """Fold number (0-4) of each image in ``idx``: grouped by patient, stratified by class+source."""
    from sklearn.model_selection import StratifiedGroupKFold

    strata = np.array([f"{s}-{c}" for s, c in zip(arrays["source"][idx], arrays["label"][idx], strict=True)])
    folds = np.full(len(idx), -1)
    skf = StratifiedGroupKFold(N_FOLDS, shuffle=True, random_state=seed)
    for k, (_, te) in enumerate(skf.split(idx, strata, groups=arrays["patient"][idx])):
        folds[te] = k
    return folds


# --- augmentation (on the training device) -------------------------------------------------


def augment(
    x: torch.Tensor,
    maps: torch.Tensor | None,
    gen: torch.Generator,
    rotate_deg: float = 10.0,
    shift: float = 0.08,
    zoom: float = 0.12,
    out_size: int | None = None,
    crop_scale: tuple[float, float] | None = None,
    strong: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keidar et al.'s augmentations on a batch: small rotation, shift, zoom, brightness,
    contrast; no flips (they would swap the patient's lungs). ``crop_scale`` makes random
    resized crops (SimCLR); ``strong`` adds gamma, blur and noise. ``x`` is in [-1024, 1024]."""
    n, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, device=dev)

    ang = (rand(n) * 2 - 1) * math.radians(rotate_deg)
    if crop_scale is not None:
        area = crop_scale[0] + rand(n) * (crop_scale[1] - crop_scale[0])
        aspect = torch.exp((rand(n) * 2 - 1) * math.log(1.25))
        sx, sy = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
        tx, ty = (rand(n) * 2 - 1) * (1 - sx), (rand(n) * 2 - 1) * (1 - sy)
    else:
        s = 1 + (rand(n) * 2 - 1) * zoom
        sx = sy = 1 / s
        tx, ty = (rand(n) * 2 - 1) * shift * 2, (rand(n) * 2 - 1) * shift * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.stack(
        [torch.stack([cos * sx, -sin * sy, tx], 1), torch.stack([sin * sx, cos * sy, ty], 1)], 1
    )
    size = out_size or x.shape[-1]
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    img = F.grid_sample(x + 1024.0, grid, align_corners=False) / 2048.0  # [0, 1], 0 outside
    contrast = 1 + (rand(n, 1, 1, 1) * 2 - 1) * (0.3 if strong else 0.2)
    bright = (rand(n, 1, 1, 1) * 2 - 1) * (0.15 if strong else 0.1)
    img = (img - 0.5) * contrast + 0.5 + bright
    if strong:
        gamma = torch.exp((rand(n, 1, 1, 1) * 2 - 1) * math.log(1.5))
        img = img.clamp(1e-4, 1) ** gamma
        blur = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, 1)
        pick = (rand(n, 1, 1, 1) < 0.3).float()
        img = pick * blur + (1 - pick) * img
        img = img + torch.randn(img.shape, generator=gen, device=dev) * 0.02 * rand(n, 1, 1, 1)
    img = img.clamp(0, 1) * 2048.0 - 1024.0
    if maps is not None:
        maps = (F.grid_sample(maps, grid, align_corners=False) > 0.5).float()
    return img, maps


def _step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor) -> float:
    """One optimiser and scheduler step; the loss as a float."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach())


# --- 1. pretraining ------------------------------------------------------------------------


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy over 2N views."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / tau
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def pretrain(images: torch.Tensor, plan: Plan, seed: int, dev: str) -> tuple[Encoder, dict[str, Any]]:
    """SimCLR on uint8 images (N, 256, 256) already on ``dev``."""
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)
    enc = Encoder().to(dev).to(memory_format=torch.channels_last)
    width = enc.widths[-1]
    proj = torch.nn.Sequential(
        torch.nn.Linear(width, 512), torch.nn.BatchNorm1d(512), torch.nn.ReLU(), torch.nn.Linear(512, 128)
    ).to(dev)
    params = list(enc.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=plan.pretrain_steps, pct_start=0.1)
    t0, losses = time.time(), []
    for _ in range(plan.pretrain_steps):
        idx = torch.randint(0, len(images), (plan.pretrain_batch,), generator=gen, device=dev)
        x = network_input(images[idx])
        views = []
        for _ in range(2):
            v, _m = augment(
                x, None, gen, rotate_deg=15, out_size=plan.pretrain_size, crop_scale=(0.3, 1.0), strong=True
            )
            views.append(v.contiguous(memory_format=torch.channels_last))
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            z1 = proj(enc(views[0])[-1].mean(dim=(2, 3)))
            z2 = proj(enc(views[1])[-1].mean(dim=(2, 3)))
            loss = nt_xent(z1, z2)
        losses.append(_step(opt, sched, loss))
    log = {
        "steps": plan.pretrain_steps,
        "batch": plan.pretrain_batch,
        "view_size": plan.pretrain_size,
        "images": int(len(images)),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.time() - t0, 1),
    }
    logger.info("pretraining: %s", log)
    return enc.eval(), log


def _start(net: Any, encoder: Encoder | None, seed: int, dev: str) -> tuple[Any, torch.Generator]:
    """``net`` (built just after seeding), with the pretrained encoder's weights if any, on ``dev``."""
    if encoder is not None:
        net.encoder.load_state_dict(encoder.state_dict())
    return net.to(dev).to(memory_format=torch.channels_last), torch.Generator(device=dev).manual_seed(seed)


# --- 2. LungNet ----------------------------------------------------------------------------


def lung_targets(arrays: dict[str, np.ndarray], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image target maps (N, 5, H, W) uint8 and channel weights (N, 5)."""
    lungs, style, opac = arrays["lungs"][idx], arrays["style"][idx], arrays["opac"][idx]
    n, _, h, w = lungs.shape
    maps = np.zeros((n, 5, h, w), np.uint8)
    weight = np.zeros((n, 5), np.float32)
    nlm = style == STYLE_NLM
    full = (style != STYLE_NONE) & ~nlm
    maps[full, V7_RIGHT], maps[full, V7_LEFT] = lungs[full, 0], lungs[full, 1]
    maps[nlm, NLM_RIGHT], maps[nlm, NLM_LEFT] = lungs[nlm, 0], lungs[nlm, 1]
    weight[full, V7_RIGHT] = weight[full, V7_LEFT] = 1
    weight[nlm, NLM_RIGHT] = weight[nlm, NLM_LEFT] = 1
    has = arrays["has_opac"][idx]
    maps[has, OPACITY] = opac[has]
    weight[has, OPACITY] = 1
    return maps, weight


def train_lungnet(
    arrays: dict[str, np.ndarray],
    images: torch.Tensor,
    train_idx: np.ndarray,
    encoder: Encoder | None,
    plan: Plan,
    seed: int,
    dev: str,
) -> tuple[LungNet, dict[str, Any]]:
    torch.manual_seed(seed)
    net, gen = _start(LungNet(), encoder, seed, dev)
    maps_np, weight_np = lung_targets(arrays, train_idx)
    maps, weight = torch.from_numpy(maps_np).to(dev), torch.from_numpy(weight_np).to(dev)
    labels = torch.from_numpy(arrays["label"][train_idx]).to(dev)
    train_rows = torch.from_numpy(train_idx).to(dev)
    counts = np.bincount(arrays["label"][train_idx][arrays["label"][train_idx] >= 0], minlength=len(CLASSES))
    cls_w = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(CLASSES), dtype=torch.float32, device=dev)
    # The opacity map has far fewer examples: each batch draws them more often.
    draw = np.where(weight_np[:, OPACITY] > 0, 6.0, 1.0)
    p = torch.from_numpy(draw / draw.sum()).to(dev)
    steps = plan.lung_epochs * math.ceil(len(train_idx) / plan.lung_batch)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    pos_w = torch.tensor([1, 1, 1, 1, 3.0], device=dev)[None, :, None, None]
    t0, losses = time.time(), []
    for _ in range(steps):
        b = torch.multinomial(p, plan.lung_batch, replacement=True, generator=gen)
        x, y = augment(network_input(images[train_rows[b]]), maps[b].float(), gen, strong=True)
        assert y is not None
        w = weight[b][:, :, None, None]
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            out, logits, _f = net.forward_all(x.contiguous(memory_format=torch.channels_last))
        out, logits = out.float(), logits.float()
        bce = F.binary_cross_entropy_with_logits(out, y, pos_weight=pos_w, reduction="none")
        bce = (bce.mean(dim=(2, 3), keepdim=True) * w).sum() / w.sum().clamp_min(1)
        prob = torch.sigmoid(out)
        inter = (prob * y).sum(dim=(2, 3))
        den = prob.sum(dim=(2, 3)) + y.sum(dim=(2, 3))
        dice = 1 - (2 * inter + 1) / (den + 1)
        dice = (dice * weight[b]).sum() / weight[b].sum().clamp_min(1)
        lab = labels[b]
        ce = F.cross_entropy(logits, lab.clamp_min(0), weight=cls_w, reduction="none")
        ce = (ce * (lab >= 0)).sum() / (lab >= 0).sum().clamp_min(1)
        loss = bce + dice + 0.3 * ce
        losses.append(_step(opt, sched, loss))
    log = {
        "epochs": plan.lung_epochs,
        "steps": steps,
        "images": int(len(train_idx)),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.time() - t0, 1),
    }
    logger.info("lungnet (%s): %s", "pretrained" if encoder is not None else "scratch", log)
    return net.eval(), log


def run_lungnet(
    net: LungNet, images: torch.Tensor, idx: np.ndarray, dev: str, batch: int = 64
) -> dict[str, np.ndarray]:
    """:func:`models.segmentation.lungnet_outputs` of ``images[idx]`` in batches (maps kept as float16)."""
    from models.segmentation import lungnet_outputs

    rows = torch.from_numpy(idx).to(dev)
    parts = [
        lungnet_outputs(net, network_input(images[rows[i : i + batch]])) for i in range(0, len(idx), batch)
    ]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["maps"] = out["maps"].astype(np.float16)
    return out


def segmentation_metrics(
    arrays: dict[str, np.ndarray], idx: np.ndarray, pred: dict[str, Any]
) -> dict[str, Any]:
    """Dice/Hausdorff per source (the head of the source's mask style), opacity Dice, edge rate."""
    from models.segmentation import clean_lung_masks
    from models.training.evaluation import dice, hausdorff, mean_std

    per: dict[str, dict[str, list[float]]] = {}
    for j, i in enumerate(idx):
        style, src = int(arrays["style"][i]), str(arrays["source"][i])
        if style == STYLE_NONE:
            continue
        m: np.ndarray = (
            clean_lung_masks(pred["maps"][j][[NLM_RIGHT, NLM_LEFT]].astype(np.float32))
            if style == STYLE_NLM
            else np.asarray(pred["lungs"][j])
        )
        gt = arrays["lungs"][i]
        d = per.setdefault(
            src, {"dice": [], "dice_right": [], "dice_left": [], "hausdorff_px": [], "edge": []}
        )
        u, gu = np.asarray(m.any(0)), np.asarray(gt.any(0))
        d["dice"].append(dice(u, gu))
        d["dice_right"].append(dice(m[0], gt[0]))
        d["dice_left"].append(dice(m[1], gt[1]))
        d["hausdorff_px"].append(hausdorff(u, gu))
        d["edge"].append(float(u[0].any() or u[-1].any() or u[:, 0].any() or u[:, -1].any()))
    out: dict[str, Any] = {}
    for src, d in per.items():
        out[src] = {k: mean_std(v) for k, v in d.items() if k != "edge"}
        out[src]["touches_image_edge"] = round(float(np.mean(d["edge"])), 4)
        out[src]["dice_median"] = round(float(np.median(d["dice"])), 4)
    od = [
        dice(pred["maps"][j][OPACITY] > 0.5, arrays["opac"][i])
        for j, i in enumerate(idx)
        if arrays["has_opac"][i]
    ]
    out["opacity_dice"] = mean_std(od) if od else None
    return out


# --- 3. classifier -------------------------------------------------------------------------


def make_crops(images8: np.ndarray, lungs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lung crops (N, CROP, CROP) float16 and their boxes (N, 4)."""
    from models.networks import lung_crop

    xs, boxes = [], []
    for img, lg in zip(images8, lungs, strict=True):
        x, box = lung_crop(img, lg)
        xs.append(x.astype(np.float16))
        boxes.append(box)
    return np.stack(xs), np.array(boxes, np.int64)


def train_classifier(
    crops: torch.Tensor,
    labels: np.ndarray,
    encoder: Encoder | None,
    plan: Plan,
    seed: int,
    dev: str,
) -> CropClassifier:
    torch.manual_seed(seed)
    net, gen = _start(CropClassifier(), encoder, seed, dev)
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    w = torch.from_numpy(1.0 / np.maximum(counts[labels], 1)).to(dev)  # class-balanced sampling
    y_all = torch.from_numpy(labels).to(dev)
    steps = plan.cls_epochs * math.ceil(len(labels) / plan.cls_batch)
    lr = 1e-3 if encoder is not None else 2e-3
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    for _ in range(steps):
        b = torch.multinomial(w, plan.cls_batch, replacement=True, generator=gen)
        x, _m = augment(crops[b].float()[:, None], None, gen)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            logits = net(x.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits.float(), y_all[b], label_smoothing=0.05)
        _step(opt, sched, loss)
    return net.eval()


@torch.no_grad()
def classify(net: CropClassifier, crops: torch.Tensor, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, 4), embeddings (N, C)) in eval mode."""
    logits, emb = [], []
    for i in range(0, len(crops), batch):
        f = net.features(crops[i : i + batch].float()[:, None])
        e = net.embed(f)
        emb.append(e.float().cpu().numpy())
        logits.append(net.fc(e).float().cpu().numpy())
    return np.concatenate(logits), np.concatenate(emb)


def gradcam_in_lungs(
    net: CropClassifier, crops: torch.Tensor, boxes: np.ndarray, lungs: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per image: fraction of Grad-CAM heat inside the predicted lungs, and whether the peak is."""
    from models.explain import gradcam
    from models.networks import uncrop

    frac, peak = [], []
    for i in range(len(crops)):
        heat = uncrop(gradcam(net, crops[i : i + 1].float()[:, None], int(targets[i])), tuple(boxes[i]))
        union = lungs[i].any(0)
        total = float(heat.sum())
        frac.append(float(heat[union].sum()) / total if total > 0 else 0.0)
        peak.append(bool(union.flat[int(np.argmax(heat))]))
    return np.array(frac), np.array(peak)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood (Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


# --- 4. severity ---------------------------------------------------------------------------


def severity_protocols(
    feats: np.ndarray,
    targets: dict[str, np.ndarray],
    groups: np.ndarray,
    cohen: np.ndarray,
    n_splits: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Cohen's 50 random 50/50 patient-grouped splits on the 94 (ridge trained on the training
    half of the 94 only, and again with the 140 later images of the training patients' *other*
    patients added), and a patient-grouped 5-fold CV on all 234 (10 repeats)."""
    from sklearn.model_selection import GroupShuffleSplit

    from models.severity import LungRidge
    from models.training.evaluation import mean_std, regression_scores

    names = ("pearson", "r2", "mae", "mse")

    def collect() -> dict[str, dict[str, list[float]]]:
        return {k: {m: [] for m in names} for k in targets}

    res = {"cohen94": collect(), "cohen94_plus_extended": collect(), "cv234": collect()}
    base = {"cohen94": collect(), "cv234": collect()}
    oof = {k: np.zeros((10, len(groups))) for k in targets}
    c_idx = np.nonzero(cohen)[0]
    gss = GroupShuffleSplit(n_splits=n_splits, test_size=0.5, random_state=seed)
    first: dict[str, Any] = {}
    for s, (a, b) in enumerate(gss.split(c_idx, groups=groups[c_idx])):
        tr, te = c_idx[a], c_idx[b]
        test_pat = set(groups[te].tolist())
        extra = np.array([i for i in np.nonzero(~cohen)[0] if groups[i] not in test_pat], int)
        for name, train_rows in (("cohen94", tr), ("cohen94_plus_extended", np.concatenate([tr, extra]))):
            model = LungRidge.fit(feats[train_rows], {k: v[train_rows] for k, v in targets.items()})
            pred = model.predict(feats[te])
            for k, y in targets.items():
                for m, v in regression_scores(y[te], pred[k]["total"]).items():
                    res[name][k][m].append(v)
                if name == "cohen94" and s == 0:
                    first[k] = {"true": y[te].tolist(), "pred": pred[k]["total"].tolist()}
        for k, y in targets.items():
            for m, v in regression_scores(y[te], np.full(len(te), y[tr].mean())).items():
                base["cohen94"][k][m].append(v)
    rng = np.random.default_rng(seed)
    patients = np.unique(groups)
    for rep in range(10):
        # each repeat deals the patients into 5 folds at random (grouped by patient)
        fold_of = dict(zip(rng.permutation(patients), np.arange(len(patients)) % N_FOLDS, strict=True))
        fold = np.array([fold_of[g] for g in groups])
        base_pred: dict[str, np.ndarray] = {k: np.zeros(len(groups)) for k in targets}
        for f in range(N_FOLDS):
            tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
            model = LungRidge.fit(feats[tr], {k: v[tr] for k, v in targets.items()})
            pred = model.predict(feats[te])
            for k, yk in targets.items():
                oof[k][rep, te] = pred[k]["total"]
                base_pred[k][te] = float(yk[tr].mean())
        for k, y in targets.items():
            for m, v in regression_scores(y, oof[k][rep]).items():
                res["cv234"][k][m].append(v)
            for m, v in regression_scores(y, base_pred[k]).items():
                base["cv234"][k][m].append(v)
    out: dict[str, Any] = {}
    for name, r in res.items():
        out[name] = {k: {m: mean_std(v) for m, v in r[k].items()} for k in targets}
    for name, r in base.items():
        out[name]["baseline"] = {k: {m: mean_std(r[k][m]) for m in ("mae", "mse")} for k in targets}
    out["split0"] = first
    out["cv234_oof_first_repeat"] = {k: oof[k][0].tolist() for k in targets}
    return out


# --- the whole run -------------------------------------------------------------------------


def _save(out: Path, name: str, net: torch.nn.Module) -> str:
    """Save a state_dict (CPU tensors only) and return its SHA-256."""
    path = out / name
    from models.registry import sha256_file

    torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path)
    return sha256_file(path)


@dataclass
class Run:
    """What the stages share: the corpus, the plan, the device and the report being written."""

    arrays: dict[str, np.ndarray]
    images: torch.Tensor  # (N, 256, 256) uint8 on the device
    plan: Plan
    seed: int
    dev: str
    out: Path
    report: dict[str, Any]
    t_start: float = field(default_factory=time.time)

    def dump(self) -> None:
        """Write the report so far (every stage leaves its part in ``fit.json``)."""
        self.report["seconds"] = round(time.time() - self.t_start, 1)
        (self.out / "fit.json").write_text(json.dumps(self.report, indent=1))

    def on_device(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(idx).to(self.dev)


def stage_pretrain(run: Run) -> Encoder:
    """1. SimCLR pretraining on every image whose patient has no severity score."""
    pre_idx = np.nonzero(~scored_patients(run.arrays))[0]
    encoder, log = pretrain(run.images[run.on_device(pre_idx)], run.plan, run.seed, run.dev)
    log["data"] = "every image whose patient has no severity score; labels unused"
    log["sha256"] = _save(run.out, "cxr-encoder.pt", encoder)
    run.report["pretraining"] = log
    run.dump()
    return encoder


def stage_lungnet(run: Run, encoder: Encoder) -> dict[str, dict[str, np.ndarray]]:
    """2. LungNet from the pretrained encoder and from scratch; held-out Dice/Hausdorff.
    Returns each variant's outputs on every image (for severity and the classifier)."""
    arrays = run.arrays
    held = segmentation_holdout(arrays)
    lung_tr = np.nonzero(~held)[0]
    held_idx = np.nonzero(held & (arrays["style"] != STYLE_NONE))[0]
    seg: dict[str, Any] = {"train_images": int(len(lung_tr)), "heldout_images_with_masks": int(len(held_idx))}
    run.report["segmentation"] = seg
    nets: dict[str, LungNet] = {}
    for variant, enc in (("pretrained", encoder), ("scratch", None)):
        net, log = train_lungnet(arrays, run.images, lung_tr, enc, run.plan, run.seed, run.dev)
        nets[variant] = net
        pred = run_lungnet(net, run.images, held_idx, run.dev)
        seg[variant] = {"training": log, "heldout": segmentation_metrics(arrays, held_idx, pred)}
        run.dump()
    seg["sha256"] = _save(run.out, "lung-net.pt", nets["pretrained"])
    all_idx = np.arange(len(arrays["files"]))
    return {v: run_lungnet(nets[v], run.images, all_idx, run.dev) for v in nets}


def stage_severity(run: Run, lungnet: dict[str, dict[str, np.ndarray]]) -> None:
    """4 (early: it needs only LungNet). Severity protocols for each LungNet variant and
    feature set; the features are kept for the release's ridge."""
    arrays = run.arrays
    sev = np.nonzero(scored(arrays))[0]
    targets = severity_targets(arrays, sev)
    groups, cohen = arrays["patient"][sev], arrays["in_cohen_2020"][sev]
    report: dict[str, Any] = {"n_images": int(len(sev)), "n_patients": int(len(set(groups.tolist())))}
    run.report["severity"] = report
    sev_feats: dict[str, np.ndarray] = {}
    for variant, outputs in lungnet.items():
        sub = {k: v[sev] for k, v in outputs.items()}
        for pooled in (True, False):
            key = f"{variant}_{'pooled' if pooled else 'scalar'}"
            sev_feats[key] = severity_matrix(arrays["image"][sev], sub, pooled=pooled)
            report[key] = severity_protocols(
                sev_feats[key], targets, groups, cohen, run.plan.severity_splits, run.seed
            )
            run.dump()
    np.savez_compressed(
        run.out / "severity-features.npz",
        files=arrays["files"][sev],
        patient=groups,
        in_cohen_2020=cohen,
        extent=targets["geographic_extent"],
        opacity=targets["opacity"],
        **sev_feats,  # type: ignore[arg-type]
    )


@dataclass
class Crops:
    """The labelled images, lung-cropped with the shipped LungNet's masks."""

    idx: np.ndarray  # into the corpus
    y: np.ndarray
    crops: torch.Tensor
    boxes: np.ndarray
    lungs: np.ndarray
    folds: np.ndarray


def classifier_cv(run: Run, data: Crops, encoder: Encoder) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """3a. Patient-grouped 5-fold CV, pretrained and from scratch: out-of-fold logits, the
    pretrained model's embeddings and its Grad-CAM heat in the lungs."""
    n = len(data.idx)
    oof: dict[str, np.ndarray] = {}
    emb_oof = np.zeros((n, Encoder().widths[-1]), np.float32)
    cam_frac, cam_peak = np.zeros(n), np.zeros(n, bool)
    timing = {}
    for variant, enc in (("pretrained", encoder), ("scratch", None)):
        logits = np.zeros((n, len(CLASSES)), np.float32)
        for k in range(N_FOLDS):
            tr, te = np.nonzero(data.folds != k)[0], np.nonzero(data.folds == k)[0]
            clf = train_classifier(
                data.crops[run.on_device(tr)], data.y[tr], enc, run.plan, run.seed + k, run.dev
            )
            lg, emb = classify(clf, data.crops[run.on_device(te)])
            logits[te] = lg
            if variant == "pretrained":
                emb_oof[te] = emb
                cam_frac[te], cam_peak[te] = gradcam_in_lungs(
                    clf, data.crops[run.on_device(te)], data.boxes[te], data.lungs[te], lg.argmax(1)
                )
        oof[variant] = logits
        timing[f"{variant}_seconds"] = round(time.time() - run.t_start, 1)
        run.dump()
    oof["embedding"] = emb_oof
    oof["gradcam_heat_in_lungs"], oof["gradcam_peak_in_lungs"] = cam_frac, cam_peak
    return oof, timing


def cross_fitted_temperature(logits: np.ndarray, y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, dict]:
    """3b. Each fold's temperature from the other folds' out-of-fold logits."""
    calibrated = np.zeros_like(logits)
    temps = []
    for k in range(N_FOLDS):
        t = fit_temperature(logits[folds != k], y[folds != k])
        temps.append(t)
        calibrated[folds == k] = logits[folds == k] / t
    return calibrated, {"per_fold": [round(t, 4) for t in temps], "all": round(fit_temperature(logits, y), 4)}


def source_probe(embedding: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """3c. The shortcut: a logistic regression telling the source from the OOF embedding."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import cross_val_predict

    probe = cross_val_predict(
        LogisticRegression(max_iter=2000, C=1.0),
        (embedding - embedding.mean(0)) / (embedding.std(0) + 1e-6),
        source,
        cv=5,
        method="predict_proba",
    )
    labels_sorted = np.unique(source)
    return {
        "balanced_accuracy": round(float(balanced_accuracy_score(source, labels_sorted[probe.argmax(1)])), 4),
        "macro_auc": round(float(roc_auc_score(source, probe, multi_class="ovr", average="macro")), 4),
        "chance_balanced_accuracy": round(1.0 / len(labels_sorted), 4),
    }


def leave_one_source_out(run: Run, data: Crops, source: np.ndarray, encoder: Encoder) -> dict[str, Any]:
    """3d. Train on the other sources (pretrained encoder), AUC per class on the held-out one."""
    from sklearn.metrics import roc_auc_score

    loso: dict[str, Any] = {}
    for s in SOURCES:
        te = np.nonzero(source == s)[0]
        tr = np.nonzero(source != s)[0]
        if len(te) == 0 or len(np.unique(data.y[tr])) < 2:
            continue
        clf = train_classifier(
            data.crops[run.on_device(tr)], data.y[tr], encoder, run.plan, run.seed + 10, run.dev
        )
        lgs, _e = classify(clf, data.crops[run.on_device(te)])
        p = softmax(lgs)
        entry: dict[str, Any] = {
            "n": int(len(te)),
            "classes_in_training": sorted({CLASSES[c] for c in data.y[tr]}),
        }
        for c, name in enumerate(CLASSES):
            yy = (data.y[te] == c).astype(int)
            if 0 < yy.sum() < len(yy) and c in set(data.y[tr].tolist()):
                entry[f"auc_{name}"] = round(float(roc_auc_score(yy, p[:, c])), 4)
        loso[s] = entry
        run.dump()
    return loso


def stage_classifier(run: Run, encoder: Encoder, lungs_all: np.ndarray) -> None:
    """3. The crop classifier: CV, calibration, Grad-CAM, source probe, leave-one-source-out,
    then the shipped model on every labelled image."""
    arrays = run.arrays
    lab_idx = np.nonzero(arrays["label"] >= 0)[0]
    crops_np, boxes = make_crops(arrays["image"][lab_idx], lungs_all[lab_idx])
    data = Crops(
        idx=lab_idx,
        y=arrays["label"][lab_idx],
        crops=torch.from_numpy(crops_np).to(run.dev),
        boxes=boxes,
        lungs=lungs_all[lab_idx],
        folds=class_folds(arrays, lab_idx, run.seed),
    )
    cls: dict[str, Any] = {
        "n_images": int(len(lab_idx)),
        "n_patients": int(len(set(arrays["patient"][lab_idx]))),
    }
    run.report["classification"] = cls
    oof, timing = classifier_cv(run, data, encoder)
    cls.update(timing)
    calibrated, cls["temperature"] = cross_fitted_temperature(oof["pretrained"], data.y, data.folds)
    cam_frac, cam_peak = oof["gradcam_heat_in_lungs"], oof["gradcam_peak_in_lungs"]
    cls["gradcam"] = {
        "heat_in_lungs": {
            "mean": round(float(cam_frac.mean()), 4),
            "median": round(float(np.median(cam_frac)), 4),
        },
        "peak_in_lungs": round(float(cam_peak.mean()), 4),
        "n": int(len(cam_frac)),
    }
    src = arrays["source"][lab_idx]
    cls["source_probe"] = source_probe(oof["embedding"], src)
    cls["leave_one_source_out"] = leave_one_source_out(run, data, src, encoder)
    np.savez_compressed(
        run.out / "classification-oof.npz",
        files=arrays["files"][lab_idx],
        source=src,
        patient=arrays["patient"][lab_idx],
        label=data.y,
        fold=data.folds,
        logits_pretrained=oof["pretrained"],
        logits_scratch=oof["scratch"],
        logits_calibrated=calibrated,
        gradcam_heat_in_lungs=cam_frac,
        gradcam_peak_in_lungs=cam_peak,
    )
    run.dump()
    final = train_classifier(data.crops, data.y, encoder, run.plan, run.seed, run.dev)
    cls["sha256"] = _save(run.out, "crop-classifier.pt", final)
    cls["final_temperature"] = cls["temperature"]["all"]
    run.dump()


def main(
    cache: Path, out: Path, quick: bool = False, seed: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """Every stage in order (see the module docstring); returns the report in ``out/fit.json``."""
    out.mkdir(parents=True, exist_ok=True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    arrays = load_cache(cache)
    if limit:  # an evenly spread subset (every source represented), for smoke runs
        keep = np.unique(np.linspace(0, len(arrays["files"]) - 1, limit).astype(int))
        arrays = {k: v[keep] for k, v in arrays.items()}
    run = Run(
        arrays=arrays,
        images=torch.from_numpy(arrays["image"]).to(dev),
        plan=Plan(quick),
        seed=seed,
        dev=dev,
        out=out,
        report={"device": dev, "quick": quick, "seed": seed, "n_images": len(arrays["files"])},
        t_start=t_start,
    )
    encoder = stage_pretrain(run)
    lungnet = stage_lungnet(run, encoder)
    stage_severity(run, lungnet)
    stage_classifier(run, encoder, lungnet["pretrained"]["lungs"])
    return run.report


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(args.cache, args.out, args.quick, args.seed, args.limit)


if __name__ == "__main__":
    cli()
