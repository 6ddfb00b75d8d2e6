"""Model selection by leave-one-source-out: the shipped design against a few alternatives.

Same cache, groups and split rules as :mod:`models.training.round3`; each variant is scored by
its leave-one-source-out AUCs and a linear source probe on its inputs and outputs.

    python -m models.training.variants --cache CACHE [--weights DIR --registry FILE]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.evidence import transform
from models.training.round3 import (
    COVID,
    auc,
    fit,
    loso_matrix,
    sample_weights,
    softmax,
    source_probe,
)
from models.training.sources import DEFAULT_DATA, SOURCES, dhash, hash_groups, index

Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _lr(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    model = fit(x, y, src)
    return lambda z: softmax(model.logits(z))


def _lr_raw(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression on standardised extra columns appended to the eight features."""
    from sklearn.linear_model import LogisticRegression

    z = np.c_[transform(x[:, :8]), x[:, 8:]]
    mean, scale = z.mean(0), z.std(0) + 1e-6
    lr = LogisticRegression(max_iter=3000).fit((z - mean) / scale, y, sample_weight=sample_weights(y, src))

    def predict(q: np.ndarray) -> np.ndarray:
        out = np.zeros((len(q), 4))
        out[:, lr.classes_] = lr.predict_proba((np.c_[transform(q[:, :8]), q[:, 8:]] - mean) / scale)
        return out

    return predict


def _trees(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        m = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_depth=3, random_state=0)
        m.fit(transform(x), y, sample_weight=sample_weights(y, src))

    def predict(q: np.ndarray) -> np.ndarray:
        out = np.zeros((len(q), 4))
        with threadpool_limits(1):
            out[:, m.classes_] = m.predict_proba(transform(q))
        return out

    return predict


def run(x: np.ndarray, y: np.ndarray, src: np.ndarray, groups: np.ndarray, fitter: Fitter) -> dict[str, Any]:
    labelled = y >= 0
    p = np.zeros((len(y), 4))
    for s in SOURCES:
        test = src == s
        train = labelled & ~np.isin(groups, np.unique(groups[test]))
        p[test] = fitter(x[train], y[train], src[train])(x[test])
    matrix = loso_matrix(p, y, src, labelled)
    cov = [v["covid19_vs_all_normals"] for v in matrix.values() if "covid19_vs_all_normals" in v]
    ab = [v["abnormal_vs_normal"] for v in matrix.values() if "abnormal_vs_normal" in v]
    probe = source_probe(np.c_[x, p], src, groups)["linear"]
    return {
        "min_covid19_vs_normal": min(cov),
        "min_abnormal_vs_normal": min(ab),
        "covid19_vs_normal": [round(v, 3) for v in cov],
        "abnormal_vs_normal": [round(v, 3) for v in ab],
        "probe_linear": probe,
        "covid19_vs_normal_pooled": auc(p[labelled & (y == COVID), COVID], p[labelled & (y == 0), COVID]),
    }


def main(
    cache: Path, data: Path, weights_dir: Path | None = None, registry: Path | None = None
) -> dict[str, Any]:
    """Each variant on ``cache`` (made with the LungNet of ``registry``, whose severity ridge
    gives variant C's scores; default: the shipped ones)."""
    from models.registry import load_registry, load_ridge
    from models.training.extract import load

    arrays = load(cache, images=True)
    items = {it.file: it for it in index(data)}
    recs = [items[str(f)] for f in arrays["files"]]
    y = np.array([r.label for r in recs])
    src = np.array([r.source for r in recs])
    hashes = np.stack([dhash(im) for im in arrays["image"]])
    groups = hash_groups([[r.patient] + ([r.link] if r.link else []) for r in recs], hashes)
    feats = arrays["features"].astype(np.float64)
    sev = load_ridge(weights_dir, load_registry(registry)).predict(arrays["severity_features"])
    scores = np.c_[sev["geographic_extent"]["total"], sev["opacity"]["total"]]
    return {
        "A: logistic regression, 8 opacity features (shipped)": run(feats, y, src, groups, _lr),
        "B: boosted trees, 8 opacity features": run(feats, y, src, groups, _trees),
        "C: A + severity extent and opacity": run(np.c_[feats, scores], y, src, groups, _lr_raw),
        "D: A + LungNet class logits": run(np.c_[feats, arrays["logits"]], y, src, groups, _lr_raw),
    }


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped)")
    p.add_argument("--registry", type=Path, default=None, help="registry (default: the shipped)")
    a = p.parse_args()
    print(json.dumps(main(a.cache, a.data, a.weights, a.registry), indent=1))


if __name__ == "__main__":
    cli()
