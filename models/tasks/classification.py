"""Four-class classifier: patient-grouped 5-fold CV for the metrics, then a final model.

The lung-mask channel comes from the shipped lung segmenter, as at inference.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.datasets import CACHE_SIZE, build_cache
from models.result import CLASSES

logger = logging.getLogger(__name__)

NAME = "cxr-resnet4"
VERSION = "1.1.0"
WIDTHS = (24, 48, 96, 128)
TARGET_SENSITIVITY = 0.98


def predicted_lungs(arrays: dict[str, np.ndarray], weights: Path, cache_dir: Path) -> np.ndarray:
    """Lung masks (N, 2, 256, 256) uint8 predicted by the lung segmenter (cached per weights hash)."""
    import torch

    from models.registry import sha256_file
    from models.segmentation import UNet, clean_lung_masks
    from models.tasks.segmentation import BASE, INPUT_STRIDE
    from models.training import predict_batches

    cache = Path(cache_dir) / f"lungs_pred_{sha256_file(weights)[:12]}.npy"
    if cache.is_file():
        return np.load(cache)
    model = UNet(1, 2, base=BASE, input_stride=INPUT_STRIDE)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    probs = predict_batches(model, arrays["image"])
    masks = np.stack([clean_lung_masks(p) for p in probs]).astype(np.uint8)
    np.save(cache, masks)
    return masks


def train_classifier(x: np.ndarray, y: np.ndarray, epochs: int, seed: int, desc: str = "classifier") -> Any:
    """Train :class:`SmallResNet` with class-balanced sampling and Keidar's augmentations."""
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    from models.classification import SmallResNet
    from models.training import augment, seed_everything

    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SmallResNet(2, len(CLASSES), WIDTHS)
    batch = 32
    steps_per_epoch = math.ceil(len(x) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, 2e-3, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    counts = np.bincount(y, minlength=len(CLASSES)).astype(float)
    weights = torch.from_numpy(1.0 / counts[y])  # class balancing by sampling
    t0 = time.time()
    for ep in range(epochs):
        model.train()
        order = torch.multinomial(weights, len(x), replacement=True, generator=gen).numpy()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} {ep + 1}/{epochs}", leave=False)
        for s in bar:
            idx = order[s * batch : (s + 1) * batch]
            xb, _ = augment(torch.from_numpy(x[idx]), None, gen)
            loss = F.cross_entropy(model(xb), torch.from_numpy(y[idx]), label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        logger.info(
            "%s epoch %d/%d loss %.4f (%.0f s)", desc, ep + 1, epochs, np.mean(losses), time.time() - t0
        )
    model.eval()
    return model


def predict_proba(model: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                torch.softmax(model(torch.from_numpy(x[i : i + batch])), 1).numpy()
                for i in range(0, len(x), batch)
            ]
        )


def threshold_at_sensitivity(y_pos: np.ndarray, score: np.ndarray, sensitivity: float) -> float:
    """Largest threshold whose sensitivity on (y_pos, score) is at least ``sensitivity``."""
    pos = np.sort(score[y_pos.astype(bool)])
    k = int(math.floor((1.0 - sensitivity) * len(pos)))
    return float(pos[k]) if len(pos) else 0.5


def metrics_from_oof(y: np.ndarray, prob: np.ndarray, fold: np.ndarray, source: np.ndarray) -> dict[str, Any]:
    """Per-class AUC (bootstrap CI), accuracy, confusion, COVID sens/spec at 98 % sensitivity."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    from models.evaluation import bootstrap_ci

    ci = CLASSES.index("covid19")
    auc = {c: bootstrap_ci((y == k).astype(int), prob[:, k], roc_auc_score) for k, c in enumerate(CLASSES)}
    pred = prob.argmax(1)
    acc = float((pred == y).mean())
    rng = np.random.default_rng(0)
    boots = [float((pred[b] == y[b]).mean()) for b in (rng.integers(0, len(y), len(y)) for _ in range(1000))]
    # Threshold for each fold chosen on the other folds' held-out predictions (never on the fold itself).
    is_cov = y == ci
    tp = fn = tn = fp = 0
    for f in np.unique(fold):
        other, this = fold != f, fold == f
        thr = threshold_at_sensitivity(is_cov[other], prob[other, ci], TARGET_SENSITIVITY)
        hit = prob[this, ci] >= thr
        tp += int((hit & is_cov[this]).sum())
        fn += int((~hit & is_cov[this]).sum())
        fp += int((hit & ~is_cov[this]).sum())
        tn += int((~hit & ~is_cov[this]).sum())
    within = (source == "cxr") & np.isin(y, [ci, CLASSES.index("pneumonia")])
    per_source = {}
    for s in np.unique(source):
        m = source == s
        per_source[str(s)] = {
            c: (
                round(float(roc_auc_score(y[m] == k, prob[m, k])), 4)
                if len(np.unique(y[m] == k)) == 2
                else None
            )
            for k, c in enumerate(CLASSES)
        }
        per_source[str(s)]["n"] = int(m.sum())
    return {
        "task": "classification",
        "protocol": "patient-grouped 5-fold CV (StratifiedGroupKFold), out-of-fold predictions",
        "classes": list(CLASSES),
        "n_images": int(len(y)),
        "class_counts": {c: int((y == k).sum()) for k, c in enumerate(CLASSES)},
        "auc": auc,
        "accuracy": {
            "value": round(acc, 4),
            "ci95": [round(float(v), 4) for v in np.percentile(boots, [2.5, 97.5])],
        },
        "covid19_at_98_sensitivity": {
            "sensitivity": round(tp / max(1, tp + fn), 4),
            "specificity": round(tn / max(1, tn + fp), 4),
            "note": "threshold per fold picked at 98% sensitivity on the other folds' "
            "out-of-fold predictions",
        },
        "within_collection_covid19_vs_pneumonia_auc": bootstrap_ci(
            (y[within] == ci).astype(int), prob[within, ci], roc_auc_score
        ),
        "per_source_auc": per_source,
        "confusion": confusion_matrix(y, pred, labels=range(len(CLASSES))).tolist(),
        "confusion_note": "rows true, columns predicted, order as classes",
    }


def _inputs(data: Path, out: Path, cache: Path | None) -> tuple[np.ndarray, ...]:
    from models.classification import classifier_input
    from models.tasks.segmentation import NAME as LUNG_NAME

    tmp = Path("/tmp/cxr-models")
    arrays = build_cache(data, cache or tmp / f"cache{CACHE_SIZE}.npz")
    lungs = predicted_lungs(arrays, Path(out) / f"{LUNG_NAME}.pt", tmp)
    keep = np.nonzero(arrays["label"] >= 0)[0]
    x = classifier_input(arrays["image"][keep], lungs[keep])
    return x, arrays["label"][keep], arrays["patient"][keep], arrays["source"][keep], arrays["files"][keep]


def train(
    data: Path,
    out: Path,
    epochs: int = 20,
    seed: int = 0,
    folds: int = 5,
    cache: Path | None = None,
    skip_cv: bool = False,
    part: str = "all",
    fold_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Final model on every labelled image and patient-grouped k-fold CV for the metrics.

    ``part`` is "all", "final" or "cv"; with ``fold_ids`` only those CV folds run
    (so two processes can share the work); metrics are assembled once every
    fold's out-of-fold predictions exist in ``out``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from models.training import save_state

    out = Path(out)
    x, y, groups, source, files = _inputs(data, out, cache)
    if part in ("all", "final"):
        t0 = time.time()
        final = train_classifier(x, y, epochs, seed, desc="final")
        sha = save_state(final, out / f"{NAME}.pt")
        (out / f"{NAME}.final.json").write_text(
            json.dumps(
                {
                    "name": NAME,
                    "version": VERSION,
                    "file": f"{NAME}.pt",
                    "sha256": sha,
                    "arch": {"class": "SmallResNet", "in_channels": 2, "widths": list(WIDTHS)},
                    "input_size": 128,
                    "labels": list(CLASSES),
                    "training": {
                        "images": int(len(y)),
                        "epochs": epochs,
                        "seed": seed,
                        "seconds": round(time.time() - t0, 1),
                        "data": "cxr-collection (todo/Unknown excluded) + nih-sample; "
                        "labels as in models/datasets.py",
                    },
                },
                indent=2,
            )
        )
    if part in ("all", "cv") and not skip_cv:
        sgkf = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for f, (tr, te) in enumerate(sgkf.split(x, y, groups)):
            if fold_ids is not None and f not in fold_ids:
                continue
            t1 = time.time()
            model = train_classifier(x[tr], y[tr], epochs, seed + f + 1, desc=f"fold {f + 1}/{folds}")
            np.savez(
                out / f"{NAME}.fold{f}.npz", te=te, prob=predict_proba(model, x[te]), seconds=time.time() - t1
            )
            logger.info("fold %d done in %.0f s", f + 1, time.time() - t1)
    return assemble(out, y, source, files, folds)


def assemble(
    out: Path, y: np.ndarray, source: np.ndarray, files: np.ndarray, folds: int = 5
) -> dict[str, Any]:
    """Write ``<NAME>.json`` from the final model's JSON and every fold's predictions (when all exist)."""
    final_path = out / f"{NAME}.final.json"
    info: dict[str, Any] = json.loads(final_path.read_text()) if final_path.is_file() else {}
    parts = [out / f"{NAME}.fold{f}.npz" for f in range(folds)]
    if all(p.is_file() for p in parts):
        prob = np.zeros((len(y), len(CLASSES)), np.float32)
        fold = np.zeros(len(y), np.int64)
        secs = 0.0
        for f, p in enumerate(parts):
            with np.load(p) as z:
                prob[z["te"]] = z["prob"]
                fold[z["te"]] = f
                secs += float(z["seconds"])
        np.savez(out / f"{NAME}.oof.npz", prob=prob, y=y, fold=fold, source=source, files=files)
        metrics = metrics_from_oof(y, prob, fold, source)
        metrics["cv_seconds"] = round(secs, 1)
        ci = CLASSES.index("covid19")
        info["thresholds"] = {
            "covid19": round(threshold_at_sensitivity(y == ci, prob[:, ci], TARGET_SENSITIVITY), 4),
            "covid19_note": "98% sensitivity on pooled out-of-fold predictions (Minaee et al.)",
        }
        info["metrics"] = metrics
    if info:
        (out / f"{NAME}.json").write_text(json.dumps(info, indent=2))
    return info
