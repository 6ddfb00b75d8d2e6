"""Fit every model from the corpus cache and evaluate each on data it never saw.

One command does it all, on a GPU when there is one (about 5 minutes on one
H200) or on the CPU (hours)::

    python -m models.training.fit --cache corpus256.npz --out OUTDIR

Steps, each written to ``OUTDIR/fit.json`` as it finishes:

1. **Pretraining** (SimCLR) of :class:`models.networks.Encoder` on every image
   whose patient has no severity score; labels unused.
2. **LungNet** from the pretrained encoder and from scratch, on images of
   patients that are neither severity-scored nor in the segmentation hold-out
   (15 % of the patients of each source, by a fixed hash of the patient id).
   Lung masks: V7 and radiologists' masks train the V7 head, NLM masks the NLM
   head (the styles never mixed); radiologists' opacity masks train the opacity
   map; class labels train the four-class head. Every training image goes
   through a random resolution chain (:func:`chain`), and the sources are drawn
   square-root balanced (:func:`source_balanced`). Dice and Hausdorff per source
   on the hold-out, on the plain and on the served (chained) square.
3. **Severity**: per-lung features from LungNet (never trained on a scored
   patient) on the served square, and a per-lung additive ridge refitted inside
   every split (Cohen's 50 random 50/50 splits on the 94; patient-grouped 5-fold
   CV on all 234).

The classifier is not fitted here: it reads the released LungNet's opacity over
all seven sources (:mod:`models.training.extract`, :mod:`models.training.round3`).
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

from models.evidence import resolution_chain
from models.networks import (
    NLM_LEFT,
    NLM_RIGHT,
    OPACITY,
    V7_LEFT,
    V7_RIGHT,
    Encoder,
    LungNet,
)
from models.preprocessing import network_input
from models.result import CLASSES
from models.severity import severity_matrix
from models.training.corpus import (
    STYLE_NLM,
    STYLE_NONE,
    load_cache,
    scored,
    scored_patients,
    severity_targets,
)

logger = logging.getLogger(__name__)

HOLDOUT_PERCENT = 15
# LungNet from the pretrained encoder and from scratch, and the file each is saved to.
LUNGNET_FILES = {"pretrained": "lung-net.pt", "scratch": "lung-net-scratch.pt"}
VARIANTS = tuple(LUNGNET_FILES)
N_FOLDS = 5


class Plan:
    """Epochs and sizes; ``quick`` shrinks everything for a CPU smoke test."""

    def __init__(self, quick: bool = False) -> None:
        self.quick = quick
        self.pretrain_steps = 4 if quick else 1500
        self.pretrain_batch = 16 if quick else 512
        self.pretrain_size = 64 if quick else 160
        self.lung_epochs = 1 if quick else 60
        self.lung_batch = 8 if quick else 48
        self.severity_splits = 5 if quick else 50


# --- splits ------------------------------------------------------------------------------


def in_holdout(patients: np.ndarray, percent: int = HOLDOUT_PERCENT) -> np.ndarray:
    """Stable patient-level hold-out: md5 of the patient id modulo 100 below ``percent``."""
    return np.array([int(hashlib.md5(p.encode()).hexdigest(), 16) % 100 < percent for p in patients])


def segmentation_holdout(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Images held out of LungNet: severity-scored patients and the hashed 15 %."""
    return scored_patients(arrays) | in_holdout(arrays["patient"])


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


def chain(x: torch.Tensor, gen: torch.Generator, p: float = 0.8, low: int = 112) -> torch.Tensor:
    """The resolution chain at random, on the training device: a random ``p`` of the batch goes
    down to one random size in [``low``, side) (area average) and back up (bilinear), as
    :func:`models.evidence.resolution_chain` does at 224 px for every served image. A 224-px
    source and a 1024-px source then look alike to the network."""
    side = x.shape[-1]
    size = int(torch.randint(low, side, (1,), generator=gen, device=x.device))
    small = F.interpolate(x, size=(size, size), mode="area")
    back = F.interpolate(small, size=(side, side), mode="bilinear", align_corners=False)
    pick = (torch.rand(x.shape[0], 1, 1, 1, generator=gen, device=x.device) < p).to(x.dtype)
    return pick * back + (1 - pick) * x


def source_balanced(source: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-image draw weight ``n_source ** -power`` (normalised to mean 1): a source with 12 times
    the images is drawn ``12 ** (1 - power)`` times as often, not 12 times."""
    _names, inverse, counts = np.unique(source, return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** -power
    return w / w.mean()


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
    init: LungNet | None = None,
    lr: float = 2e-3,
) -> tuple[LungNet, dict[str, Any]]:
    """LungNet trained on ``train_idx`` of ``images`` (from scratch or the pretrained encoder;
    ``init``: fine-tuned from that network instead, at peak learning rate ``lr``)."""
    torch.manual_seed(seed)
    net, gen = _start(init if init is not None else LungNet(), encoder, seed, dev)
    maps_np, weight_np = lung_targets(arrays, train_idx)
    maps, weight = torch.from_numpy(maps_np).to(dev), torch.from_numpy(weight_np).to(dev)
    labels = torch.from_numpy(arrays["label"][train_idx]).to(dev)
    train_rows = torch.from_numpy(train_idx).to(dev)
    counts = np.bincount(arrays["label"][train_idx][arrays["label"][train_idx] >= 0], minlength=len(CLASSES))
    cls_w = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(CLASSES), dtype=torch.float32, device=dev)
    # The opacity map has far fewer examples: each batch draws them more often; and every
    # source is drawn about as often as the others (square-root balance).
    draw = np.where(weight_np[:, OPACITY] > 0, 6.0, 1.0) * source_balanced(arrays["source"][train_idx])
    p = torch.from_numpy(draw / draw.sum()).to(dev)
    steps = plan.lung_epochs * math.ceil(len(train_idx) / plan.lung_batch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    pos_w = torch.tensor([1, 1, 1, 1, 3.0], device=dev)[None, :, None, None]
    t0, losses = time.time(), []
    for _ in range(steps):
        b = torch.multinomial(p, plan.lung_batch, replacement=True, generator=gen)
        x = chain(network_input(images[train_rows[b]]), gen)
        x, y = augment(x, maps[b].float(), gen, strong=True)
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
        "augmentation": "random resolution chain (80 %, 112-255 px), affine, strong intensity",
        "sampling": "opacity-masked images x6, sources square-root balanced",
        "images": int(len(train_idx)),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.time() - t0, 1),
    }
    start = "fine-tuned" if init is not None else "pretrained" if encoder is not None else "scratch"
    logger.info("lungnet (%s): %s", start, log)
    return net.eval(), log


def served_squares(images8: np.ndarray) -> np.ndarray:
    """The corpus squares as the node serves them (:func:`models.evidence.resolution_chain`)."""
    return np.stack([resolution_chain(im) for im in images8])


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


# --- 3. severity ---------------------------------------------------------------------------


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
    patients added), and a patient-grouped 5-fold CV on all 234 (10 repeats). Scored as the node
    reports them (:meth:`models.severity.LungRidge.report`)."""
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
            pred = model.report(feats[te])
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
            pred = model.report(feats[te])
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
    served_np: np.ndarray  # the same through the served resolution chain (models.evidence)
    served: torch.Tensor  # that on the device
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


def stage_lungnet(
    run: Run, encoder: Encoder | None, variants: tuple[str, ...] = VARIANTS
) -> dict[str, dict[str, np.ndarray]]:
    """2. LungNet from the pretrained encoder and from scratch (``variants``); held-out
    Dice/Hausdorff. Returns each variant's outputs on every image (for severity)."""
    arrays = run.arrays
    held = segmentation_holdout(arrays)
    lung_tr = np.nonzero(~held)[0]
    held_idx = np.nonzero(held & (arrays["style"] != STYLE_NONE))[0]
    seg: dict[str, Any] = {"train_images": int(len(lung_tr)), "heldout_images_with_masks": int(len(held_idx))}
    run.report["segmentation"] = seg
    nets: dict[str, LungNet] = {}
    for variant in variants:
        enc = encoder if variant == "pretrained" else None
        net, log = train_lungnet(arrays, run.images, lung_tr, enc, run.plan, run.seed, run.dev)
        nets[variant] = net
        seg[variant] = {
            "training": log,
            "heldout": segmentation_metrics(
                arrays, held_idx, run_lungnet(net, run.images, held_idx, run.dev)
            ),
            "heldout_served": segmentation_metrics(
                arrays, held_idx, run_lungnet(net, run.served, held_idx, run.dev)
            ),
            "sha256": _save(run.out, LUNGNET_FILES[variant], net),
        }
        run.dump()
    all_idx = np.arange(len(arrays["files"]))
    # What the node computes: LungNet on the served (chained) square.
    return {v: run_lungnet(nets[v], run.served, all_idx, run.dev) for v in nets}


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
            sev_feats[key] = severity_matrix(run.served_np[sev], sub, pooled=pooled)
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


def main(
    cache: Path,
    out: Path,
    quick: bool = False,
    seed: int = 0,
    limit: int | None = None,
    variants: tuple[str, ...] = VARIANTS,
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
    served = served_squares(arrays["image"])
    run = Run(
        arrays=arrays,
        images=torch.from_numpy(arrays["image"]).to(dev),
        served_np=served,
        served=torch.from_numpy(served).to(dev),
        plan=Plan(quick),
        seed=seed,
        dev=dev,
        out=out,
        report={"device": dev, "quick": quick, "seed": seed, "n_images": len(arrays["files"])},
        t_start=t_start,
    )
    encoder = stage_pretrain(run) if "pretrained" in variants else None
    lungnet = stage_lungnet(run, encoder, variants)
    stage_severity(run, lungnet)
    return run.report


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    ap.add_argument("--limit", type=int, default=None, help="first N images only (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="LungNets to fit")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(args.cache, args.out, args.quick, args.seed, args.limit, tuple(args.variants))


if __name__ == "__main__":
    cli()
