"""Model selection by leave-one-source-out: the shipped design against a few alternatives.

Same cache, groups and split rules as :mod:`models.training.round3`; each variant is scored by
its leave-one-source-out AUCs and a linear source probe on its inputs and outputs.

    python -m models.training.variants --cache CACHE [--mirrored CACHE2] [--matched CACHE3 ...]
        [--weights DIR --registry FILE] [--record]

``--mirrored``: a second cache of the same images made with ``extract --mirror`` (LungNet's
test-time flip); it adds variant H, C on that cache's features and severity totals.
``--matched``: caches of the same images made with :mod:`models.training.grey` (each film's grey
matched to one reference before LungNet); each adds a variant, I on that cache (J, K, ...).

``--record`` writes the table into the registry's classification entry
(``metrics.model_selection``), where the classification card reads it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from models.evidence import FEATURES, OPACITY_FEATURES, classifier_inputs, transform
from models.training.round3 import (
    C_REG,
    COVID,
    auc,
    extent_scores,
    fit,
    fit_blended,
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


def _lr_appended(n: int) -> Fitter:
    """Logistic regression on the first ``n`` columns logged (:func:`transform`) and the
    columns after them as given, all standardised."""

    def fitter(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def design(q: np.ndarray) -> np.ndarray:
            return np.c_[transform(q[:, :n]), q[:, n:]]

        predict = _lr_plain(design(x), y, src)
        return lambda q: predict(design(q))

    return fitter


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


def _blended(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`models.training.round3.fit_blended`: C and E (the two totals alone), logits mixed."""
    model = fit_blended(x, y, src)
    return lambda z: softmax(model.logits(z))


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


def _group_dro(eta: float, rounds: int = 15) -> Fitter:
    """C's logistic regression with group DRO over the source x class cells (Sagawa et al. 2020,
    as sample weights): after each fit, every cell's weight is multiplied by
    ``exp(eta * its mean log loss)`` and the model refitted, so the worst cells count most."""

    def fitter(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        z = transform(x)
        mean, scale = z.mean(0), z.std(0) + 1e-6
        z = (z - mean) / scale
        base = sample_weights(y, src)
        cells = [(src == s) & (y == c) for s in np.unique(src) for c in np.unique(y)]
        cells = [m for m in cells if m.any()]
        q = np.full(len(cells), 1.0 / len(cells))
        for _ in range(rounds):
            w = base.copy()
            for k, m in enumerate(cells):
                w[m] *= q[k] * len(cells)
            lr = LogisticRegression(C=C_REG, max_iter=2000).fit(z, y, sample_weight=w)
            nll = -np.log(lr.predict_proba(z)[np.arange(len(y)), np.searchsorted(lr.classes_, y)] + 1e-12)
            q = q * np.exp(eta * np.array([nll[m].mean() for m in cells]))
            q /= q.sum()

        def predict(qx: np.ndarray) -> np.ndarray:
            out = np.zeros((len(qx), 4))
            out[:, lr.classes_] = lr.predict_proba((transform(qx) - mean) / scale)
            return out

        return predict

    return fitter


def lung_shape(lungs: np.ndarray) -> np.ndarray:
    """Five measures of the outline (no opacity) of one image's cleaned lungs (2, H, W):
    log(smaller / larger lung area), the lower and the mean of the two lungs' solidity (area /
    convex hull), log(height / width) of both lungs together, and the widest gap between the
    lungs in their lower 40 % as a share of the width across them (a cardiothoracic-ratio proxy)."""
    from skimage.morphology import convex_hull_image

    lungs = np.asarray(lungs, bool)
    areas = lungs.sum((1, 2)).astype(float)
    if areas.min() < 50:
        return np.zeros(5)
    union: np.ndarray = np.asarray(lungs.any(0))
    rows, cols = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    solidity = [float(lung.sum() / max(convex_hull_image(lung).sum(), 1)) for lung in lungs]
    gaps = []
    for r in range(rows[0] + int(0.6 * height), rows[-1] + 1):
        a, b = np.nonzero(lungs[0, r])[0], np.nonzero(lungs[1, r])[0]
        if len(a) and len(b):
            left, right = (a, b) if a.mean() < b.mean() else (b, a)
            gaps.append((right.min() - left.max() - 1) / (right.max() - left.min() + 1))
    return np.array(
        [
            np.log(areas.min() / areas.max()),
            min(solidity),
            float(np.mean(solidity)),
            np.log(height / width),
            max(gaps) if gaps else 0.0,
        ]
    )


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
    cache: Path,
    data: Path,
    weights_dir: Path | None = None,
    registry: Path | None = None,
    mirrored: Path | None = None,
    matched: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Each variant on ``cache`` (made with the LungNet of ``registry``; default: the shipped
    one), and C within each source (:func:`in_source_cv`). The severity totals of C, E, F, G, H
    and I are refitted without each image's patient group
    (:func:`models.training.round3.severity_inputs`), as in round 3."""
    arrays, recs, y, src, groups = load_grouped(cache, data)
    feats = arrays["features"].astype(np.float64)
    sev, _ = severity_inputs(arrays, recs, groups, weights_dir, registry)
    with_sev = classifier_inputs(feats, sev["geographic_extent"], sev["opacity"])
    extent = sev["geographic_extent"]
    after_opacity, after_totals = _lr_appended(len(OPACITY_FEATURES)), _lr_appended(len(FEATURES))
    shape = np.stack([lung_shape(m) for m in arrays["lungs"]])
    variants = {
        "A: logistic regression, 8 opacity features (3.1.0)": run(feats, y, src, groups, _lr),
        "B: boosted trees, 8 opacity features": run(feats, y, src, groups, _trees),
        "C: A + severity extent and opacity totals (shipped 3.2.0-3.4.0)": run(with_sev, y, src, groups, _lr),
        "D: A + LungNet class logits": run(np.c_[feats, arrays["logits"]], y, src, groups, after_opacity),
        "E: severity totals alone (log)": run(transform(with_sev)[:, 8:], y, src, groups, _lr_plain),
        "F: C + lung shape (left/right area, solidity, height/width, gap between the lungs)": run(
            np.c_[with_sev, shape], y, src, groups, after_totals
        ),
        "G: C with group DRO over source x class (eta 0.3)": run(with_sev, y, src, groups, _group_dro(0.3)),
    }
    if mirrored is not None:
        flipped = _same_films_inputs(mirrored, data, arrays["files"], groups, weights_dir, registry)
        variants[MIRRORED] = run(flipped, y, src, groups, _lr)
    variants[AVERAGED] = run(with_sev, y, src, groups, _blended)
    if len(matched) > 5:
        raise ValueError("at most five grey-matched caches (variants J-N)")
    for letter, other in zip("JKLMN", matched, strict=False):
        from models.training.grey import label

        meta = json.loads((Path(other) / "grey.json").read_text())
        inputs = _same_films_inputs(other, data, arrays["files"], groups, weights_dir, registry)
        variants[f"{letter}: I on films grey-matched before LungNet ({label(meta)})"] = run(
            inputs, y, src, groups, _blended
        )
    variants["extent alone, no classifier"] = _scores_only(extent_scores(extent), y, src)
    return {
        "variants": variants,
        "in_source_cv": in_source_cv(with_sev, y, src, groups),
        "low_evidence": low_evidence(extent, y, src),
    }


AVERAGED = "I: C and E, their logits averaged (shipped since 3.5.0)"
MIRRORED = "H: C with LungNet's test-time flip (maps and logits averaged with the mirrored film's)"


def _same_films_inputs(
    cache: Path,
    data: Path,
    files: np.ndarray,
    groups: np.ndarray,
    weights_dir: Path | None = None,
    registry: Path | None = None,
) -> np.ndarray:
    """C's inputs from another cache of the same films (``extract --mirror``, or
    :mod:`models.training.grey`): its opacity features and its severity totals (a ridge refitted
    on its features without each image's patient group, the groups of the first cache)."""
    arrays, recs, _, _, _ = load_grouped(cache, data)
    if not np.array_equal(arrays["files"], files):
        raise ValueError(f"{cache} does not hold the same films in the same order as the first cache")
    sev, _ = severity_inputs(arrays, recs, groups, weights_dir, registry)
    return classifier_inputs(arrays["features"].astype(np.float64), sev["geographic_extent"], sev["opacity"])


LOW_EXTENT = 0.5  # of Cohen's 0-8: under a sixteenth of one lung's extent range


def low_evidence(
    extent: np.ndarray, y: np.ndarray, src: np.ndarray, below: float = LOW_EXTENT
) -> dict[str, Any]:
    """Per source, the share of its COVID-19 films and of its normal films whose severity extent
    (out of group) is under ``below``: films with next to no opacity for a lung reader to see. A
    COVID-19 label is a PCR result, not a finding on the film; where many COVID-19 films read as
    clear, no threshold on lung opacity reaches a high sensitivity there without also marking
    most normals."""
    out: dict[str, Any] = {"below": below}
    for s in SOURCES:
        row = {}
        for name, c in (("covid19", COVID), ("normal", 0)):
            m = (src == s) & (y == c)
            if m.any():
                row[name] = {"n": int(m.sum()), "share": round(float((extent[m] < below).mean()), 4)}
        if row:
            out[s] = row
    return out


def in_source_cv(
    x: np.ndarray, y: np.ndarray, src: np.ndarray, groups: np.ndarray, folds: int = 5
) -> dict[str, dict[str, float | None]]:
    """C's design trained and tested inside each source with >= 50 normals (patient-grouped
    ``folds``-fold CV): what its inputs can tell apart where the source is no shift at all. Not a
    transfer measure; the ceiling the leave-one-source-out numbers are read against."""
    from sklearn.model_selection import GroupKFold

    out: dict[str, dict[str, float | None]] = {}
    for s in SOURCES:
        m = (src == s) & (y >= 0)
        if ((y == 0) & m).sum() < 50 or not ((y != 0) & m).any():
            continue
        xs, ys, gs, ss = transform(x[m]), y[m], groups[m], src[m]
        p = np.zeros((len(ys), 4))
        for train, test in GroupKFold(folds).split(xs, ys, gs):
            p[test] = _lr_plain(xs[train], ys[train], ss[train])(xs[test])
        row = {"abnormal_vs_normal": auc(1 - p[ys != 0, 0], 1 - p[ys == 0, 0])}
        if (ys == COVID).any():
            row["covid19_vs_own_normals"] = auc(p[ys == COVID, COVID], p[ys == 0, COVID])
        out[s] = row
    return out


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


COMMAND = (
    "python -m models.training.variants --cache CACHE --mirrored CACHE2 --matched CACHE3 CACHE4 CACHE5 "
    "(the caches of models.training.extract, the second with --mirror, the last three of "
    "models.training.grey: strength 1, 0.5, and 1 with --finetune 4)"
)
NOTE = (
    "leave-one-source-out, same groups; COVID-19 vs every out-of-source normal (cxr-collection, "
    "covid-radiography, hannover, covid-cxnet) and abnormal vs own normals (covid-radiography, NIH, "
    "Montgomery, Shenzhen); linear source probe on the raw inputs and outputs; the severity totals of "
    "C and E-L from a ridge refitted without each image's patient group"
)


def record(result: dict[str, Any], registry: Path | None = None) -> None:
    """Write :func:`main`'s result into the classification entry's ``metrics.model_selection``
    (every other key and role kept)."""
    from models.registry import entry, load_registry, update_registry

    classification = entry("classification", load_registry(registry))
    kept = {
        k: v for k, v in classification["metrics"].get("model_selection", {}).items() if k == "grey_matching"
    }
    classification["metrics"]["model_selection"] = {"command": COMMAND, "note": NOTE, **result, **kept}
    update_registry({"classification": classification}, registry)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--weights", type=Path, default=None, help="weights folder (default: the shipped)")
    p.add_argument("--registry", type=Path, default=None, help="registry (default: the shipped)")
    p.add_argument("--record", action="store_true", help="write the table into the registry")
    p.add_argument("--mirrored", type=Path, default=None, help="the same films' cache from extract --mirror")
    p.add_argument("--matched", type=Path, nargs="*", default=[], help="the same films' caches from grey")
    a = p.parse_args()
    result = main(a.cache, a.data, a.weights, a.registry, a.mirrored, tuple(a.matched))
    print(json.dumps(result, indent=1))
    if a.record:
        record(result, a.registry)


if __name__ == "__main__":
    cli()
