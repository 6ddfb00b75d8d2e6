"""Fit and evaluate the similar-case retrieval projection (:class:`models.retrieval.Projection`).

python -m models.training.retrieval --cache corpus256.npz    # fit, evaluate, ship, register
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.result import CLASSES
from models.retrieval import DIM, FILE, NAME, VERSION, Projection

K = 5


def fit_projection(pooled: np.ndarray, dim: int = DIM) -> Projection:
    """Fit the standardisation and the PCA on (N, 2, C) pooled features."""
    from sklearn.decomposition import PCA

    raw = np.asarray(pooled, np.float64).reshape(len(pooled), -1)
    mean, scale = raw.mean(0), raw.std(0)
    scale[scale < 1e-6] = 1.0
    pca = PCA(n_components=dim, random_state=0).fit((raw - mean) / scale)
    return Projection(mean.astype(np.float32), scale.astype(np.float32), pca.components_.astype(np.float32))


def nearest(emb: np.ndarray, groups: np.ndarray, k: int = K, allowed: np.ndarray | None = None) -> np.ndarray:
    """Indices (N, k) of each row's k most similar rows of other groups (patients).

    ``allowed`` (N, N) bool further restricts the candidates (e.g. other sources only).
    """
    sims = emb @ emb.T
    excluded = groups[:, None] == groups[None, :]
    if allowed is not None:
        excluded |= ~allowed
    sims = np.where(excluded, -np.inf, sims)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def retrieval_metrics(
    emb: np.ndarray, labels: np.ndarray, sources: np.ndarray, patients: np.ndarray, k: int = K
) -> dict[str, Any]:
    """Precision@k of the class, the same-source rate of the neighbours (each beside what
    random neighbours would give), cross-source precision@k, and Keidar et al.'s k-NN vote
    for COVID-19 (neighbours' labels averaged). Never the query patient's own images."""
    other_patient = patients[:, None] != patients[None, :]
    same_label = labels[:, None] == labels[None, :]
    same_source = sources[:, None] == sources[None, :]
    nn = nearest(emb, patients, k)
    rows = np.arange(len(emb))[:, None]
    p_at_k = same_label[rows, nn].mean(1)
    chance_label = (same_label & other_patient).sum(1) / other_patient.sum(1)
    src_rate = same_source[rows, nn].mean(1)
    chance_src = (same_source & other_patient).sum(1) / other_patient.sum(1)
    nn_x = nearest(emb, patients, k, allowed=~same_source)
    p_cross = same_label[rows, nn_x].mean(1)
    chance_cross = (same_label & ~same_source).sum(1) / np.maximum((~same_source).sum(1), 1)

    covid = CLASSES.index("covid19")
    vote = (labels[nn] == covid).mean(1) > 0.5
    truth = labels == covid
    per_class = {
        CLASSES[c]: {
            "n": int((labels == c).sum()),
            "precision_at_k": round(float(p_at_k[labels == c].mean()), 4),
        }
        for c in range(len(CLASSES))
        if (labels == c).any()
    }
    return {
        "k": k,
        "n_queries": int(len(emb)),
        "n_patients": int(len(np.unique(patients))),
        "precision_at_k": round(float(p_at_k.mean()), 4),
        "precision_at_k_chance": round(float(chance_label.mean()), 4),
        "per_class": per_class,
        "same_source_rate": round(float(src_rate.mean()), 4),
        "same_source_rate_chance": round(float(chance_src.mean()), 4),
        "cross_source_precision_at_k": round(float(p_cross.mean()), 4),
        "cross_source_precision_at_k_chance": round(float(chance_cross.mean()), 4),
        "knn_covid19_vote": {
            "accuracy": round(float((vote == truth).mean()), 4),
            "sensitivity": round(float(vote[truth].mean()), 4) if truth.any() else None,
            "specificity": round(float((~vote[~truth]).mean()), 4) if (~truth).any() else None,
        },
    }


def pooled_features(
    cache: Path,
    device: str = "cpu",
    weights_dir: Path | None = None,
    registry: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The corpus (labels, sources, patients, hold-out flag) and the shipped LungNet's
    lung-pooled features of every image (CPU: a few minutes)."""
    import torch

    from models.registry import build_model
    from models.training.corpus import load_cache
    from models.training.fit import run_lungnet, segmentation_holdout, served_squares

    arrays = load_cache(cache)
    net = build_model("segmentation", device, weights_dir, registry)
    idx = np.arange(len(arrays["files"]))
    served = torch.from_numpy(served_squares(arrays["image"]))  # as the node serves them
    with torch.inference_mode():
        pooled = run_lungnet(net, served, idx, device, batch=32)["pooled"]
    return {
        "pooled": pooled.astype(np.float32),
        "label": arrays["label"],
        "source": arrays["source"],
        "patient": arrays["patient"],
        "heldout": segmentation_holdout(arrays),
    }


def evaluate(features: dict[str, np.ndarray], projection: Projection, k: int = K) -> dict[str, Any]:
    """:func:`retrieval_metrics` on LungNet's held-out patients (labelled images only),
    for the shipped projection and, for comparison, raw cosine on the pooled features."""
    m = features["heldout"] & (features["label"] >= 0)
    args = (features["label"][m], features["source"][m], features["patient"][m])
    raw = features["pooled"][m].reshape(int(m.sum()), -1)
    raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return {
        "protocol": "LungNet's held-out patients (every severity-scored patient + a hashed 15 % of the "
        "others); queries and archive both held out; the query patient's own images excluded",
        "shipped": retrieval_metrics(projection.transform(features["pooled"][m]), *args, k=k),
        "raw_cosine": retrieval_metrics(raw, *args, k=k),
    }


def release(cache: Path, weights: Path, registry: Path) -> dict[str, Any]:
    """Fit the projection on the LungNet of ``registry`` (its training images only), evaluate
    it on LungNet's held-out patients, write it to ``weights`` and register it."""
    from models.registry import load_registry, sha256_file, update_registry

    features = pooled_features(cache, weights_dir=weights, registry=load_registry(registry))
    train = ~features["heldout"]
    projection = fit_projection(features["pooled"][train])
    path = weights / FILE
    path.write_bytes(projection.to_bytes())
    metrics = evaluate(features, projection)
    update_registry(
        {
            "retrieval": {
                "name": NAME,
                "version": VERSION,
                "file": FILE,
                "sha256": sha256_file(path),
                "arch": {"class": "Projection", "dim": DIM, "features": "lung-net pooled, right + left"},
                "input_size": 256,
                "labels": [],
                "thresholds": {},
                "training": {
                    "command": "python -m models.training.retrieval --cache corpus256.npz "
                    "(run by cxr-node train after the fit)",
                    "images": int(train.sum()),
                    "data": "LungNet's training images (never its held-out patients); no labels used",
                },
                "metrics": metrics,
            }
        },
        registry,
    )
    return metrics


def main(argv: list[str] | None = None) -> None:
    from models.registry import REGISTRY_PATH, WEIGHTS_DIR

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, required=True, help="the training corpus cache (corpus256.npz)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--registry", type=Path, default=REGISTRY_PATH)
    args = parser.parse_args(argv)
    print(json.dumps(release(args.cache, args.weights, args.registry), indent=1))


if __name__ == "__main__":
    main()
