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

from models.evidence import classifier_inputs, transform
from models.training.round3 import (
    COVID,
    auc,
    extent_scores,
    fit,
    load_grouped,
    loso_matrix,
    sample_weights,
    severity_inputs,
    softmax,
    source_probe,
)
from models.training.sources import DEFAULT_DATA, SOURCES

Fitter = Callable[[np.ndarray, np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _lr(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    model = fit(x, y, src)
    return lambda z: softmax(model.logits(z))


def _lr_raw(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression on standardised extra columns appended to the eight features."""

    def design(q: np.ndarray) -> np.ndarray:
        return np.c_[transform(q[:, :8]), q[:, 8:]]

    predict = _lr_plain(design(x), y, src)
    return lambda q: predict(design(q))


def _lr_plain(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression on the standardised columns as given."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(max_iter=3000).fit((x - mean) / scale, y, sample_weight=sample_weights(y, src))

    def predict(q: np.ndarray) -> np.ndarray:
        out = np.zeros((len(q), 4))
        out[:, lr.classes_] = lr.predict_proba((q - mean) / scale)
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
    return {
        **_scores_only(p, y, src),
        "probe_linear": source_probe(np.c_[x, p], src, groups)["linear"],
        "covid19_vs_normal_pooled": auc(p[labelled & (y == COVID), COVID], p[labelled & (y == 0), COVID]),
    }


def main(
    cache: Path, data: Path, weights_dir: Path | None = None, registry: Path | None = None
) -> dict[str, Any]:
    """Each variant on ``cache`` (made with the LungNet of ``registry``; default: the shipped
    one). The severity totals of C and E are refitted without each image's patient group
    (:func:`models.training.round3.severity_inputs`), as in round 3."""
    arrays, recs, y, src, groups = load_grouped(cache, data)
    feats = arrays["features"].astype(np.float64)
    sev, _ = severity_inputs(arrays, recs, groups, weights_dir, registry)
    with_sev = classifier_inputs(feats, sev["geographic_extent"], sev["opacity"])
    extent = sev["geographic_extent"]
    return {
        "A: logistic regression, 8 opacity features (3.1.0)": run(feats, y, src, groups, _lr),
        "B: boosted trees, 8 opacity features": run(feats, y, src, groups, _trees),
        "C: A + severity extent and opacity totals (shipped, 3.2.0)": run(with_sev, y, src, groups, _lr),
        "D: A + LungNet class logits": run(np.c_[feats, arrays["logits"]], y, src, groups, _lr_raw),
        "E: severity totals alone (log)": run(transform(with_sev)[:, 8:], y, src, groups, _lr_plain),
        "extent alone, no classifier": _scores_only(extent_scores(extent), y, src),
    }


def _scores_only(p: np.ndarray, y: np.ndarray, src: np.ndarray) -> dict[str, Any]:
    """The AUCs of a fixed score (no training): the reference the classifiers are held to."""
    labelled = y >= 0
    matrix = loso_matrix(p, y, src, labelled)
    cov = [v["covid19_vs_all_normals"] for v in matrix.values() if "covid19_vs_all_normals" in v]
    ab = [v["abnormal_vs_normal"] for v in matrix.values() if "abnormal_vs_normal" in v]
    return {
        "min_covid19_vs_normal": min(cov),
        "min_abnormal_vs_normal": min(ab),
        "covid19_vs_normal": [round(v, 3) for v in cov],
        "abnormal_vs_normal": [round(v, 3) for v in ab],
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
