"""Turn one ``models.training.fit`` run into the shipped weights, registry and metrics.

    python -m models.training.release --fit DIR           # DIR: what models.training.fit wrote

Copies the pretrained encoder, LungNet and the crop classifier into
``models/weights``, fits the shipped severity ridge on all 234 scored images
(features of the shipped LungNet), and computes every classification metric
from the saved out-of-fold predictions (``classification-oof.npz``, shipped
beside the weights so that ``cxr-node eval classification --recompute`` can
recompute them on the CPU). Writes ``models/registry.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import REGISTRY_PATH, WEIGHTS_DIR, sha256_file, update_registry
from models.result import CLASSES
from models.training.evaluation import softmax

VERSION = "2.0.0"
SEVERITY_FEATURES = "pretrained_pooled"  # the ridge's feature set (chosen on the CV, see the card)
FIT_COMMAND = (
    "python -m models.training.fit --cache corpus256.npz --out DIR  "
    "(corpus256.npz from models.training.corpus.build_cache(../shared/data); one H100, 7 min), "
    "then python -m models.training.release --fit DIR"
)
TARGET_SENSITIVITY = 0.98


def reliability(prob: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Expected calibration error of the top class, and the diagram's bins."""
    conf, pred = prob.max(1), prob.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            acc, c = float((pred[m] == y[m]).mean()), float(conf[m].mean())
            ece += m.mean() * abs(acc - c)
            rows.append(
                {
                    "bin": [round(lo, 2), round(hi, 2)],
                    "n": int(m.sum()),
                    "confidence": round(c, 4),
                    "accuracy": round(acc, 4),
                }
            )
    return {"ece": round(float(ece), 4), "bins": rows}


def classification_metrics(oof: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every classification number from the out-of-fold logits (calibrated with cross-fitted T)."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    from models.training.evaluation import bootstrap_ci

    y, src = oof["label"], oof["source"]
    p = softmax(oof["logits_calibrated"])
    out: dict[str, Any] = {
        "task": "classification",
        "protocol": "patient-grouped 5-fold CV (StratifiedGroupKFold by class and source, seed 0); "
        "out-of-fold predictions; temperature cross-fitted on the other folds",
        "n_images": int(len(y)),
        "n_patients": int(len(np.unique(oof["patient"]))),
        "auc": {c: bootstrap_ci((y == i).astype(int), p[:, i], roc_auc_score) for i, c in enumerate(CLASSES)},
        "accuracy": round(float((p.argmax(1) == y).mean()), 4),
        "confusion": confusion_matrix(y, p.argmax(1), labels=range(len(CLASSES))).tolist(),
        "confusion_labels": list(CLASSES),
    }
    covid = CLASSES.index("covid19")
    s = p[:, covid]
    pos = np.sort(s[y == covid])
    thr = float(pos[int(np.floor((1 - TARGET_SENSITIVITY) * len(pos)))])
    out["covid19_at_98_sensitivity"] = {
        "threshold": round(thr, 4),
        "sensitivity": round(float((s[y == covid] >= thr).mean()), 4),
        "specificity": round(float((s[y != covid] < thr).mean()), 4),
    }
    m = (y == covid) | (y == CLASSES.index("normal"))
    out["covid19_vs_normal_auc"] = bootstrap_ci((y[m] == covid).astype(int), s[m], roc_auc_score)
    m = ((y == covid) | (y == CLASSES.index("pneumonia"))) & (src == "cxr")
    out["within_collection_covid19_vs_pneumonia_auc"] = bootstrap_ci(
        (y[m] == covid).astype(int), s[m], roc_auc_score
    )
    per_source: dict[str, Any] = {}
    for name in np.unique(src):
        ms = src == name
        entry: dict[str, Any] = {
            "n": int(ms.sum()),
            "accuracy": round(float((p[ms].argmax(1) == y[ms]).mean()), 4),
        }
        for i, c in enumerate(CLASSES):
            yy = (y[ms] == i).astype(int)
            if 0 < yy.sum() < len(yy):
                entry[f"auc_{c}"] = round(float(roc_auc_score(yy, p[ms, i])), 4)
        per_source[str(name)] = entry
    out["per_source"] = per_source
    for variant in ("pretrained", "scratch"):
        pv = softmax(oof[f"logits_{variant}"])
        out.setdefault("pretraining_ablation", {})[variant] = {
            "accuracy": round(float((pv.argmax(1) == y).mean()), 4),
            "auc": {c: round(float(roc_auc_score(y == i, pv[:, i])), 4) for i, c in enumerate(CLASSES)},
        }
    out["calibration"] = {
        "uncalibrated": reliability(softmax(oof["logits_pretrained"]), y),
        "temperature_scaled": reliability(p, y),
    }
    out["gradcam"] = {
        "heat_in_lungs": {
            "mean": round(float(oof["gradcam_heat_in_lungs"].mean()), 4),
            "median": round(float(np.median(oof["gradcam_heat_in_lungs"])), 4),
        },
        "peak_in_lungs": round(float(oof["gradcam_peak_in_lungs"].mean()), 4),
        "note": "fraction of each out-of-fold image's Grad-CAM heat inside its predicted lungs "
        "(the mediastinum and everything else count as outside)",
    }
    return out


def severity_ridge(fit_dir: Path) -> tuple[Any, dict[str, Any]]:
    from models.severity import LungRidge

    z = np.load(fit_dir / "severity-features.npz", allow_pickle=False)
    feats = z[SEVERITY_FEATURES]
    targets = {"geographic_extent": z["extent"], "opacity": z["opacity"]}
    return LungRidge.fit(feats, targets), {
        "images": int(len(feats)),
        "patients": int(len(np.unique(z["patient"]))),
    }


def _head(weights: Path, name: str, file: str) -> dict[str, Any]:
    """The first fields of a registry entry: name, version, weights file and its SHA-256."""
    return {"name": name, "version": VERSION, "file": file, "sha256": sha256_file(weights / file)}


def main(fit_dir: Path, weights: Path = WEIGHTS_DIR, registry: Path = REGISTRY_PATH) -> dict[str, Any]:
    fit = json.loads((fit_dir / "fit.json").read_text())
    weights.mkdir(parents=True, exist_ok=True)
    for f in ("cxr-encoder.pt", "lung-net.pt", "crop-classifier.pt", "classification-oof.npz"):
        shutil.copyfile(fit_dir / f, weights / f)
    ridge, ridge_data = severity_ridge(fit_dir)
    ridge_path = weights / "severity-ridge.json"
    ridge_path.write_text(json.dumps(ridge.to_json(), indent=1, sort_keys=True))
    with np.load(weights / "classification-oof.npz", allow_pickle=False) as z:
        oof = {k: z[k] for k in z.files}
    cls_metrics = classification_metrics(oof)
    cls_metrics["source_probe"] = fit["classification"]["source_probe"]
    cls_metrics["leave_one_source_out"] = fit["classification"]["leave_one_source_out"]
    seg, sev = fit["segmentation"], fit["severity"]
    arch = {"widths": [32, 64, 128, 256]}
    training = {"seed": fit["seed"], "device": fit["device"], "command": FIT_COMMAND}
    reg: dict[str, Any] = {"models": {}}
    reg["models"]["encoder"] = {
        **_head(weights, "cxr-encoder", "cxr-encoder.pt"),
        "arch": {"class": "Encoder", **arch},
        "input_size": 160,
        "labels": [],
        "thresholds": {},
        "training": {**training, **fit["pretraining"]},
        "metrics": {"note": "no metrics of its own: see the downstream pretraining ablations"},
    }
    reg["models"]["segmentation"] = {
        **_head(weights, "lung-net", "lung-net.pt"),
        "arch": {"class": "LungNet", **arch},
        "input_size": 256,
        "labels": ["right_lung", "left_lung", "right_lung_nlm", "left_lung_nlm", "opacity"],
        "thresholds": {"mask": 0.5},
        "training": {
            **training,
            **seg["pretrained"]["training"],
            "images": seg["train_images"],
            "data": "V7 + radiologists' lung masks (cxr-collection), NLM lung masks (Montgomery, "
            "Shenzhen; own head), radiologists' opacity masks, class labels; every patient with a "
            "severity score and a hashed 15% of the others held out",
        },
        "metrics": {
            "heldout": seg["pretrained"]["heldout"],
            "heldout_scratch": seg["scratch"]["heldout"],
            "heldout_images": seg["heldout_images_with_masks"],
            "note": "Dice at the 256-px square; hausdorff in px at 256 (JPEGs carry no spacing); "
            "cxr with the V7-style head, montgomery/shenzhen with the NLM-style head",
        },
    }
    reg["models"]["classification"] = {
        **_head(weights, "crop-classifier", "crop-classifier.pt"),
        "arch": {"class": "CropClassifier", **arch},
        "input_size": 192,
        "labels": list(CLASSES),
        "thresholds": {"covid19": cls_metrics["covid19_at_98_sensitivity"]["threshold"]},
        "temperature": fit["classification"]["final_temperature"],
        "training": {
            **training,
            "images": fit["classification"]["n_images"],
            "data": "every labelled image of the four sources, lung-cropped; class-balanced sampling",
        },
        "metrics": cls_metrics,
    }
    sev_metrics = {k: v for k, v in sev.items() if k != "split0"}
    reg["models"]["severity"] = {
        **_head(weights, "severity-ridge", "severity-ridge.json"),
        "arch": {"class": "LungRidge", "features": SEVERITY_FEATURES},
        "input_size": 256,
        "labels": ["geographic_extent", "opacity"],
        "thresholds": {},
        "training": {
            **training,
            **ridge_data,
            "data": "severity-scores-extended.csv (234 images; 0-8 opacity rows rescaled x 6/8)",
        },
        "metrics": sev_metrics,
    }
    # The round-2 crop classifier is measured and kept beside the weights for comparison; the
    # classification role is the lung-opacity classifier (models.training.round3), registered
    # after this by `cxr-node train`.
    crop = reg["models"].pop("classification")
    (weights / "crop-classifier.json").write_text(json.dumps(crop, indent=1) + "\n")
    return update_registry(reg["models"], registry)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="ship one models.training.fit run")
    ap.add_argument("--fit", type=Path, required=True)
    args = ap.parse_args()
    main(args.fit)


def _rates(flag: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    return {
        "n": int(len(truth)),
        "positives": int(truth.sum()),
        "sensitivity": round(float(flag[truth].mean()), 4) if truth.any() else None,
        "specificity": round(float((~flag[~truth]).mean()), 4) if (~truth).any() else None,
    }


def triage_metrics(
    oof: dict[str, np.ndarray], severity_oof: np.ndarray, severity_truth: np.ndarray
) -> dict[str, Any]:
    """Sensitivity and specificity of the default triage rule's two conditions, held out.

    - ``covid19 >= auto``: on the classifier's out-of-fold probabilities against the
      COVID-19 label, with the threshold cross-fitted (set at 98 % sensitivity on the
      other four folds, applied to the fifth), and with the shipped threshold (set on
      all folds, so slightly optimistic);
    - ``extent >= 4``: the severity ridge's out-of-fold extent (patient-grouped 5-fold
      CV on the 234 scored images) against the radiologists' extent >= 4.
    """
    y, fold = oof["label"], oof["fold"]
    covid = CLASSES.index("covid19")
    s = softmax(oof["logits_calibrated"])[:, covid]
    truth = y == covid
    flag = np.zeros(len(y), bool)
    thresholds = []
    for f in np.unique(fold):
        pos = np.sort(s[(fold != f) & truth])
        thr = float(pos[int(np.floor((1 - TARGET_SENSITIVITY) * len(pos)))])
        thresholds.append(round(thr, 4))
        flag[fold == f] = s[fold == f] >= thr
    shipped = float(np.sort(s[truth])[int(np.floor((1 - TARGET_SENSITIVITY) * truth.sum()))])
    return {
        "task": "triage",
        "rule": "covid19 >= auto or extent >= 4 (the default triage_rule)",
        "covid19": {
            "protocol": "classifier out-of-fold probabilities, patient-grouped 5-fold CV; threshold at 98 % "
            "sensitivity cross-fitted on the other folds",
            "fold_thresholds": thresholds,
            **_rates(flag, truth),
            "shipped_threshold": {"threshold": round(shipped, 4), **_rates(s >= shipped, truth)},
        },
        "extent_4": {
            "protocol": "severity ridge out-of-fold extent, patient-grouped 5-fold CV on the 234 scored "
            "images; truth: radiologists' extent >= 4",
            **_rates(severity_oof >= 4, severity_truth >= 4),
        },
    }
