"""Severity: opacity segmenter + ridge, evaluated with Cohen et al.'s 50 random splits.

Features: per-lung opacity fractions and intensity statistics, plus the four
logits of a "backbone" classifier (same architecture as the shipped classifier).
Leakage control: every patient with a severity score is excluded from the
training of both segmenters (lung and opacity) and of the backbone classifier,
so no test image of any split
contributed to a model whose output feeds the score; the ridge is refitted on
the training half of every split.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import CACHE_SIZE, build_cache, severity_patients
from models.result import CLASSES
from models.tasks.classification import WIDTHS

logger = logging.getLogger(__name__)

NAME = "opacity-unet"
RIDGE = "severity-ridge"
BACKBONE = "severity-backbone"
VERSION = "1.0.0"
RIDGE_VERSION = "1.1.0"
BACKBONE_EPOCHS = 10
BASE = 8
N_SPLITS = 50


def train(
    data: Path,
    out: Path,
    epochs: int = 60,
    seed: int = 0,
    cache: Path | None = None,
    opacity_only: bool = False,
    reuse_opacity: bool = False,
) -> dict[str, Any]:
    """Train the opacity U-Net, run the 50-split protocol, fit and save the final ridge.

    ``opacity_only`` stops after saving the opacity U-Net; ``reuse_opacity``
    loads the one already in ``out`` (trained by an earlier call with the same seed).
    """
    import hashlib

    import torch

    from models.evaluation import dice, mean_std
    from models.segmentation import UNet
    from models.severity import RidgeModel
    from models.tasks.classification import predicted_lungs
    from models.tasks.segmentation import NAME as LUNG_NAME
    from models.training import predict_batches, save_state, seed_everything, train_segmenter

    out = Path(out)
    tmp = Path("/tmp/cxr-models")
    seed_everything(seed)
    arrays = build_cache(data, cache or tmp / f"cache{CACHE_SIZE}.npz")
    sev_pat = severity_patients(arrays)
    in_sev = np.isin(arrays["patient"], list(sev_pat))
    tr = np.nonzero(arrays["has_opac"] & ~in_sev)[0]
    model = UNet(1, 1, base=BASE)
    log_path = out / f"{NAME}.train.json"
    if reuse_opacity:
        model.load_state_dict(torch.load(out / f"{NAME}.pt", map_location="cpu", weights_only=True))
        model.eval()
        log = json.loads(log_path.read_text())
        sha_unet = log["sha256"]
    else:
        log = train_segmenter(
            model,
            arrays["image"][tr],
            arrays["opac"][tr][:, None],
            epochs,
            seed,
            batch_size=4,
            lr=3e-3,
            pos_weight=2.0,
            desc="opacity",
        )
        sha_unet = save_state(model, out / f"{NAME}.pt")
        log_path.write_text(json.dumps({**log, "sha256": sha_unet, "epochs": epochs}))
        if opacity_only:
            return {"opacity": {"sha256": sha_unet, **log}}
    epochs = int(log.get("epochs", epochs))
    held_seg = np.nonzero(arrays["has_opac"] & in_sev)[0]
    p_held = predict_batches(model, arrays["image"][held_seg])[:, 0]
    lungs = predicted_lungs(arrays, out / f"{LUNG_NAME}.pt", tmp)
    opac_dice = []
    for j, i in enumerate(held_seg):
        opac_dice.append(dice(p_held[j] > 0.5, arrays["opac"][i].astype(bool)))

    backbone, bb_log = _backbone(arrays, lungs, in_sev, out, seed, reuse_opacity)
    feats, targets, groups, sev = severity_table(arrays, lungs, model, backbone)
    metrics, first_split = split_protocol(feats, targets, groups, seed)
    metrics["n_images"] = int(len(sev))
    metrics["opacity_segmenter_dice_heldout"] = mean_std(opac_dice)
    final = RidgeModel.fit(feats, targets)
    ridge_path = out / f"{RIDGE}.json"
    ridge_path.write_text(json.dumps(final.to_json(), indent=1, sort_keys=True))
    info = {
        "opacity": {
            "name": NAME,
            "version": VERSION,
            "file": f"{NAME}.pt",
            "sha256": sha_unet,
            "arch": {"class": "UNet", "in_channels": 1, "out_channels": 1, "base": BASE, "depth": 4},
            "input_size": CACHE_SIZE,
            "labels": ["opacity"],
            "thresholds": {"mask": 0.5},
            "training": {
                "images": int(len(tr)),
                "epochs": epochs,
                "seed": seed,
                "seconds": round(log["seconds"], 1),
                "data": "radiologists' ground-glass + consolidation masks (union) of cxr-collection "
                "images whose patient has no severity score",
            },
            "metrics": {
                "dice_heldout": mean_std(opac_dice),
                "note": "Dice (whole 256-px square) on the radiologist-segmented images of "
                "severity-scored patients, never trained on",
            },
        },
        "backbone": {
            "name": BACKBONE,
            "version": VERSION,
            "file": f"{BACKBONE}.pt",
            "sha256": bb_log["sha256"],
            "arch": {"class": "SmallResNet", "in_channels": 2, "widths": list(WIDTHS)},
            "input_size": 128,
            "labels": list(CLASSES),
            "thresholds": {},
            "training": {
                "images": bb_log["images"],
                "epochs": BACKBONE_EPOCHS,
                "seed": seed + 100,
                "seconds": bb_log["seconds"],
                "data": "the classifier's training data minus every patient with a severity score; "
                "its 4 logits are severity features",
            },
            "metrics": {"note": "no metrics of its own; evaluated through the severity protocol"},
        },
        "severity": {
            "name": RIDGE,
            "version": RIDGE_VERSION,
            "file": f"{RIDGE}.json",
            "sha256": hashlib.sha256(ridge_path.read_bytes()).hexdigest(),
            "arch": {"class": "RidgeModel", "features": len(feats[0])},
            "input_size": CACHE_SIZE,
            "labels": list(targets),
            "thresholds": {},
            "training": {
                "images": int(len(sev)),
                "seed": seed,
                "data": "Cohen et al. severity-scores.csv (94 images)",
            },
            "metrics": metrics,
        },
    }
    (out / "severity.json").write_text(json.dumps(info, indent=2))
    split0 = {f"{k}_{t}": np.asarray(v[t]) for k, v in first_split.items() for t in ("true", "pred")}
    np.savez(out / "severity.split0.npz", **split0)  # type: ignore[arg-type]
    return info


def _backbone(
    arrays: dict[str, np.ndarray], lungs: np.ndarray, in_sev: np.ndarray, out: Path, seed: int, reuse: bool
) -> tuple[Any, dict[str, Any]]:
    """A classifier trained without any severity-scored patient; its logits feed the ridge."""
    import torch

    from models.classification import SmallResNet, classifier_input
    from models.tasks.classification import train_classifier
    from models.training import save_state

    log_path = out / f"{BACKBONE}.train.json"
    if reuse and log_path.is_file():
        model = SmallResNet(2, len(CLASSES), WIDTHS)
        model.load_state_dict(torch.load(out / f"{BACKBONE}.pt", map_location="cpu", weights_only=True))
        return model.eval(), json.loads(log_path.read_text())
    keep = np.nonzero((arrays["label"] >= 0) & ~in_sev)[0]
    x = classifier_input(arrays["image"][keep], lungs[keep])
    t0 = time.time()
    model = train_classifier(x, arrays["label"][keep], BACKBONE_EPOCHS, seed + 100, desc="backbone")
    log = {
        "sha256": save_state(model, out / f"{BACKBONE}.pt"),
        "images": int(len(keep)),
        "seconds": round(time.time() - t0, 1),
    }
    log_path.write_text(json.dumps(log))
    return model, log


def backbone_logits(backbone: Any, image256: np.ndarray, lungs256: np.ndarray) -> np.ndarray:
    """(N, 4) logits of the severity backbone for uint8 images and lung masks at 256 px."""
    import torch

    from models.classification import classifier_input

    with torch.no_grad():
        return backbone(torch.from_numpy(classifier_input(image256, lungs256))).numpy()


def severity_table(
    arrays: dict[str, np.ndarray], lungs: np.ndarray, opacity_model: Any, backbone: Any
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features, targets, patient groups and indices of the severity-scored images."""
    from models.severity import severity_features
    from models.training import predict_batches

    sev = np.nonzero(~np.isnan(arrays["extent"]))[0]
    probs = predict_batches(opacity_model, arrays["image"][sev])[:, 0]
    logits = backbone_logits(backbone, arrays["image"][sev], lungs[sev])
    feats = np.stack(
        [severity_features(arrays["image"][i], lungs[i], probs[j], logits[j]) for j, i in enumerate(sev)]
    )
    targets = {
        "geographic_extent": arrays["extent"][sev].astype(float),
        "opacity": arrays["opacity"][sev].astype(float),
    }
    return feats, targets, arrays["patient"][sev], sev


def split_protocol(
    feats: np.ndarray, targets: dict[str, np.ndarray], groups: np.ndarray, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cohen et al.: 50 random 50/50 patient-grouped splits; ridge refitted on each training half."""
    from sklearn.model_selection import GroupShuffleSplit

    from models.evaluation import mean_std, regression_scores
    from models.severity import RidgeModel

    t0 = time.time()
    names = ("pearson", "r2", "mae", "mse")
    per: dict[str, dict[str, list[float]]] = {k: {m: [] for m in names} for k in targets}
    base: dict[str, dict[str, list[float]]] = {k: {m: [] for m in names} for k in targets}
    first: dict[str, Any] = {}
    gss = GroupShuffleSplit(n_splits=N_SPLITS, test_size=0.5, random_state=seed)
    for s, (a, b) in enumerate(gss.split(feats, groups=groups)):
        ridge = RidgeModel.fit(feats[a], {k: v[a] for k, v in targets.items()})
        pred = ridge.predict(feats[b])
        for k, y in targets.items():
            for m, v in regression_scores(y[b], pred[k]).items():
                per[k][m].append(v)
            for m, v in regression_scores(y[b], np.full(len(b), y[a].mean())).items():
                base[k][m].append(v)
            if s == 0:
                first[k] = {"true": y[b], "pred": pred[k]}
    metrics: dict[str, Any] = {
        "task": "severity",
        "protocol": f"{N_SPLITS} random 50/50 patient-grouped splits (GroupShuffleSplit, seed {seed})",
        "n_patients": int(len(set(groups.tolist()))),
    }
    for k in targets:
        metrics[k] = {m: mean_std(v) for m, v in per[k].items()}
    metrics["baseline"] = {k: {m: mean_std(base[k][m]) for m in ("mae", "mse")} for k in targets}
    metrics["baseline_note"] = "'no data' baseline: predict the training half's mean"
    metrics["leakage_control"] = (
        "lung and opacity segmenters and the backbone classifier never trained on a patient "
        "with a severity score; ridge refitted on each split's training half"
    )
    metrics["seconds"] = round(time.time() - t0, 1)
    return metrics, first


def evaluate_shipped(data: Path, seed: int = 0) -> dict[str, Any]:
    """Re-run the 50-split protocol with the shipped lung and opacity segmenters."""
    from models.registry import build_model

    arrays = build_cache(data, Path("/tmp/cxr-models") / f"cache{CACHE_SIZE}.npz")
    lung = build_model("segmentation")
    from models.segmentation import clean_lung_masks
    from models.training import predict_batches

    sev = np.nonzero(~np.isnan(arrays["extent"]))[0]
    lungs = np.zeros(arrays["lungs"].shape, np.uint8)
    probs = predict_batches(lung, arrays["image"][sev])
    for j, i in enumerate(sev):
        lungs[i] = clean_lung_masks(probs[j])
    feats, targets, groups, sev = severity_table(
        arrays, lungs, build_model("opacity"), build_model("severity_backbone")
    )
    metrics, _ = split_protocol(feats, targets, groups, seed)
    metrics["n_images"] = int(len(sev))
    return metrics
