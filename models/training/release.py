"""Turn one ``models.training.fit`` run into the shipped weights, registry and metrics.

    python -m models.training.release --fit DIR           # DIR: what models.training.fit wrote

Copies the pretrained encoder and the chosen LungNet variant into ``models/weights``, fits the
shipped severity ridge on all 234 scored images (that LungNet's features on the served square)
and registers the three roles (:func:`models.registry.update_registry`). The classification
and retrieval roles are fitted on the released LungNet afterwards (``cxr-node train`` runs
them in order).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import REGISTRY_PATH, WEIGHTS_DIR, sha256_file, update_registry
from models.training.fit import LUNGNET_FILES

VERSION = "3.0.0"
# The ridge of VERSION, reported with the clear-lung rule (models.severity.LungRidge.report)
SEVERITY_VERSION = "3.0.1"
SEVERITY_PREVIOUS = (
    "severity-ridge@3.0.0 (the same coefficients, each lung's two scores clipped apart: "
    "a lung could read extent 0.0 with opacity 0.4)"
)
# The LungNet variant shipped: chosen on held-out Dice and the severity CV of the fit report
# (models/cards/segmentation.md); the other variant's numbers stay in the registry beside it.
VARIANT = "scratch"
SEVERITY_FEATURES = f"{VARIANT}_pooled"  # the ridge's feature set
FIT_COMMAND = (
    "python -m models.training.fit --cache corpus256.npz --out DIR  "
    "(corpus256.npz from models.training.corpus.build_cache(../shared/data); one H200, 5 min), "
    "then python -m models.training.release --fit DIR"
)


def severity_ridge(fit_dir: Path) -> tuple[Any, dict[str, Any]]:
    from models.severity import LungRidge

    with np.load(fit_dir / "severity-features.npz", allow_pickle=False) as z:
        feats, patients = z[SEVERITY_FEATURES], z["patient"]
        targets = {"geographic_extent": z["extent"], "opacity": z["opacity"]}
    return LungRidge.fit(feats, targets), {
        "images": int(len(feats)),
        "patients": int(len(np.unique(patients))),
    }


def _head(weights: Path, name: str, file: str) -> dict[str, Any]:
    """The first fields of a registry entry: name, version, weights file and its SHA-256."""
    return {"name": name, "version": VERSION, "file": file, "sha256": sha256_file(weights / file)}


def main(fit_dir: Path, weights: Path = WEIGHTS_DIR, registry: Path = REGISTRY_PATH) -> dict[str, Any]:
    fit = json.loads((fit_dir / "fit.json").read_text())
    missing = [v for v in LUNGNET_FILES if v not in fit["segmentation"]]
    if missing:  # the registry records both LungNets side by side
        raise ValueError(f"{fit_dir} holds no {', '.join(missing)} LungNet: release a fit of both variants")
    weights.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fit_dir / "cxr-encoder.pt", weights / "cxr-encoder.pt")
    shutil.copyfile(fit_dir / LUNGNET_FILES[VARIANT], weights / "lung-net.pt")
    ridge, ridge_data = severity_ridge(fit_dir)
    (weights / "severity-ridge.json").write_text(json.dumps(ridge.to_json(), indent=1, sort_keys=True))
    seg, sev = fit["segmentation"], fit["severity"]
    other = next(v for v in LUNGNET_FILES if v != VARIANT)
    arch = {"widths": [32, 64, 128, 256]}
    training = {"seed": fit["seed"], "device": fit["device"], "command": FIT_COMMAND}
    roles: dict[str, Any] = {}
    roles["encoder"] = {
        **_head(weights, "cxr-encoder", "cxr-encoder.pt"),
        "arch": {"class": "Encoder", **arch},
        "input_size": 160,
        "labels": [],
        "thresholds": {},
        "training": {**training, **fit["pretraining"]},
        "metrics": {"note": "no metrics of its own: LungNet from it and from scratch, side by side"},
    }
    roles["segmentation"] = {
        **_head(weights, "lung-net", "lung-net.pt"),
        "arch": {"class": "LungNet", **arch},
        "input_size": 256,
        "labels": ["right_lung", "left_lung", "right_lung_nlm", "left_lung_nlm", "opacity"],
        "thresholds": {"mask": 0.5},
        "training": {
            **training,
            **seg[VARIANT]["training"],
            "variant": VARIANT,
            "images": seg["train_images"],
            "data": "V7 + radiologists' lung masks (cxr-collection), NLM lung masks (Montgomery, "
            "Shenzhen; own head), radiologists' opacity masks, class labels; every patient with a "
            "severity score and a hashed 15% of the others held out",
        },
        "metrics": {
            "heldout": seg[VARIANT]["heldout_served"],
            "heldout_plain_square": seg[VARIANT]["heldout"],
            f"heldout_{other}": seg[other]["heldout_served"],
            "heldout_images": seg["heldout_images_with_masks"],
            "note": "Dice at the 256-px square; hausdorff in px at 256 (JPEGs carry no spacing); "
            "cxr with the V7-style head, montgomery/shenzhen with the NLM-style head; 'heldout' on "
            "the served square (the resolution chain), 'heldout_plain_square' without it",
        },
    }
    roles["severity"] = {
        **_head(weights, "severity-ridge", "severity-ridge.json"),
        "version": SEVERITY_VERSION,
        "arch": {"class": "LungRidge", "features": SEVERITY_FEATURES},
        "input_size": 256,
        "labels": ["geographic_extent", "opacity"],
        "thresholds": {},
        "training": {
            **training,
            **ridge_data,
            "data": "severity-scores-extended.csv (234 images; 0-8 opacity rows rescaled x 6/8)",
            "previous": SEVERITY_PREVIOUS,
        },
        "metrics": {k: v for k, v in sev.items() if k != "split0"},
    }
    return update_registry(roles, registry)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="ship one models.training.fit run")
    ap.add_argument("--fit", type=Path, required=True)
    args = ap.parse_args()
    main(args.fit)
