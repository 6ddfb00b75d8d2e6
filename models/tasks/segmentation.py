"""Lung segmenter: training on V7 and radiologists' lung masks, held-out evaluation.

Held-out patients: every patient with a Cohen severity score (so that lung
masks feeding the severity model never saw a scored image) plus a fixed
random 10 % of the remaining patients with lung masks.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import CACHE_SIZE, build_cache, severity_patients

logger = logging.getLogger(__name__)

NAME = "lung-unet"
VERSION = "1.0.0"
BASE = 12
INPUT_STRIDE = 2


def heldout_mask(arrays: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
    """Boolean mask of images whose patient is held out from segmenter training."""
    from sklearn.model_selection import GroupShuffleSplit

    sev = severity_patients(arrays)
    patients = arrays["patient"]
    held = np.isin(patients, list(sev))
    rest = np.nonzero((arrays["lung_src"] > 0) & ~held)[0]
    gss = GroupShuffleSplit(n_splits=1, test_size=0.1, random_state=seed)
    _, test = next(gss.split(rest, groups=patients[rest]))
    held_pat = set(patients[rest[test]].tolist()) | sev
    return np.isin(patients, list(held_pat))


def train(
    data: Path, out: Path, epochs: int = 30, seed: int = 0, cache: Path | None = None
) -> dict[str, Any]:
    """Train the lung U-Net on non-held-out patients and evaluate on the held-out ones."""
    from models.segmentation import UNet
    from models.training import save_state, seed_everything, train_segmenter

    seed_everything(seed)
    cache = cache or Path("/tmp/cxr-models") / f"cache{CACHE_SIZE}.npz"
    arrays = build_cache(data, cache)
    held = heldout_mask(arrays, seed)
    tr = np.nonzero((arrays["lung_src"] > 0) & ~held)[0]
    logger.info(
        "lung training images %d, held-out patients' images with masks %d",
        len(tr),
        int(((arrays["lung_src"] > 0) & held).sum()),
    )
    model = UNet(1, 2, base=BASE, input_stride=INPUT_STRIDE)
    log = train_segmenter(model, arrays["image"][tr], arrays["lungs"][tr], epochs, seed, desc="lungs")
    sha = save_state(model, Path(out) / f"{NAME}.pt")
    metrics = evaluate_model(model, data, arrays, held)
    info = {
        "name": NAME,
        "version": VERSION,
        "file": f"{NAME}.pt",
        "sha256": sha,
        "arch": {
            "class": "UNet",
            "in_channels": 1,
            "out_channels": 2,
            "base": BASE,
            "depth": 4,
            "input_stride": INPUT_STRIDE,
        },
        "input_size": CACHE_SIZE,
        "labels": ["right_lung", "left_lung"],
        "thresholds": {"mask": 0.5},
        "training": {
            "images": int(len(tr)),
            "epochs": epochs,
            "seed": seed,
            "seconds": round(log["seconds"], 1),
            "final_loss": round(log["final_loss"], 4),
            "data": "cxr-collection V7 lung masks (split into right/left by connected "
            "components) and radiologists' right/left lung masks; patients with "
            "severity scores and 10% of the others held out",
        },
        "metrics": metrics,
    }
    (Path(out) / f"{NAME}.json").write_text(json.dumps(info, indent=2))
    return info


def evaluate_model(model: Any, data: Path, arrays: dict[str, np.ndarray], held: np.ndarray) -> dict[str, Any]:
    """Dice (at input resolution) and Hausdorff distance (model pixels) on held-out images."""
    from PIL import Image

    from models.datasets import split_lungs
    from models.evaluation import dice, hausdorff, mean_std
    from models.preprocessing import load_image, preprocess
    from models.segmentation import clean_lung_masks
    from models.training import predict_batches

    idx = np.nonzero((arrays["lung_src"] > 0) & held)[0]
    t0 = time.time()
    probs = predict_batches(model, arrays["image"][idx])
    per: dict[str, list[float]] = {"dice": [], "dice_right": [], "dice_left": [], "hausdorff_px": []}
    rows = []
    for j, i in enumerate(idx):
        pred = clean_lung_masks(probs[j])
        gt = arrays["lungs"][i].astype(bool)
        per["hausdorff_px"].append(hausdorff(pred[0] | pred[1], gt[0] | gt[1]))
        # Dice at the input image's resolution against the original mask files.
        loaded = load_image(Path(data) / arrays["files"][i])
        _, geom = preprocess(loaded.pixels, CACHE_SIZE)
        stem = Path(str(arrays["files"][i])).stem
        root = Path(data) / "cxr-collection"
        if arrays["lung_src"][i] == 2:
            r = np.asarray(Image.open(root / "segmentations/right-lung" / f"{stem}.png")) == 255
            l_ = np.asarray(Image.open(root / "segmentations/left-lung" / f"{stem}.png")) == 255
        else:
            r, l_ = split_lungs(
                np.asarray(Image.open(root / "lung-masks" / f"{stem}.png").convert("L")) == 255
            )
        pr = geom.to_input(pred[0].astype(np.float32)) > 0.5
        pl = geom.to_input(pred[1].astype(np.float32)) > 0.5
        d = dice(pr | pl, r | l_)
        per["dice"].append(d)
        per["dice_right"].append(dice(pr, r))
        per["dice_left"].append(dice(pl, l_))
        rows.append((str(arrays["files"][i]), d))
    out: dict[str, Any] = {k: mean_std(v) for k, v in per.items()}
    out["n_images"] = int(len(idx))
    out["n_patients"] = int(len(set(arrays["patient"][idx].tolist())))
    out["dice_median"] = round(float(np.median(per["dice"])), 4)
    out["seconds"] = round(time.time() - t0, 1)
    out["note"] = (
        "dice: both lungs together, at the input image's resolution; hausdorff_px: "
        f"symmetric Hausdorff distance in pixels at the model's {CACHE_SIZE}-px square "
        "(JPEG inputs carry no pixel spacing, so no mm)"
    )
    out["worst"] = sorted(rows, key=lambda t: t[1])[:5]
    logger.info("lung held-out dice %s", out["dice"])
    return out
