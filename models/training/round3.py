"""Round 3: the lung-opacity classifier, chosen and measured by leave-one-source-out.

Reads the LungNet cache of :mod:`models.training.extract` and writes ``report.json``
(every number of the cards) and, with ``--ship``, the classifier's coefficients to
``models/weights/`` and its registry entry (read-modify-write: every other role is kept).

Split rules:

- **Leave one source out** (the model-selection criterion): for each of the seven sources,
  the model is trained on images whose *patient group* has no image in that source (so a
  hannover patient's cxr-collection films leave with hannover) and tested on the source.
- **Patient groups** (:mod:`models.training.sources`): ids where they exist, merged with
  256-bit difference-hash near-duplicates (<= 12 bits) across every folder.
- **Source probe**: 5-fold ``StratifiedGroupKFold`` over patient groups.
- **Severity inputs**: the classifier also reads the severity ridge's totals. For every
  number here they come from a ridge refitted without the image's patient group
  (:func:`out_of_group_severity`: 5 folds over the groups), so no image is scored by a ridge
  fitted on its own patient's radiologist scores (the 234 scored images are cxr-collection's,
  some of hannover's patients among them). The shipped classifier is fitted on those same
  out-of-group totals, as the node will see them on a new patient.
- **Triage**: the ``auto`` threshold for a held-out source is set on predictions for the
  other sources made by models that saw neither that source nor the predicted one (nested
  leave-one-source-out), then applied to the held-out source.

    nice python -m models.training.round3 --cache /work/cache15 --out /work/cache15/round3 [--ship]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.evidence import FEATURES, OPACITY_FEATURES, OpacityClassifier, classifier_inputs, transform
from models.result import CLASSES
from models.training.sources import DEFAULT_DATA, SOURCES, Item, dhash, hash_groups, index

logger = logging.getLogger(__name__)

PROTOCOL = (
    "leave one source out (7 sources): trained on the patient groups with no image in the held-out "
    "source, tested on it; groups: ids where they exist + 256-bit dHash near-duplicates (<= 12 bits); "
    "temperature fitted on the out-of-source logits; severity totals (classifier inputs, triage, "
    "ICU check) from a ridge refitted without the image's patient group; a film whose outline fails "
    "the quality check (totals withheld, lungs found) is read by the fold's twin without the totals"
)
NORMAL, OTHER, PNEUMONIA, COVID = (CLASSES.index(c) for c in CLASSES)
TARGET_SENSITIVITY = 0.97  # the auto threshold's sensitivity on the sources it is fitted on
# 3.2.0 (on lung-net@3.0.0, the severity totals as inputs) + its twin without the totals (3.3.0),
# fitted on films whose constant margins (padding, shutters) are cropped whatever their width
# (3.4.0), its logits mixed with those of the regression on the two totals alone (3.5.0); the
# same, on films whose grey is scaled without their constant margins (3.6.0); refitted after the
# quality check learnt to tell a negative film (3.6.1)
VERSION = "3.6.1"
EXTENT_URGENT = 4.0
MIN_CELL = 20  # source x class cells smaller than this weigh as if they had this many images
C_REG = 1.0
TOTALS_WEIGHT = 0.5  # the share of the totals-alone regression's logits (model selection's I)
MIN_SCORED = 20  # fewer scored training images than this: the released ridge instead (smoke runs)


def sample_weights(y: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Each class weighs the same in total, and within a class each source the same."""
    w = np.zeros(len(y))
    for c in np.unique(y):
        cells = [s for s in np.unique(src[y == c])]
        for s in cells:
            m = (y == c) & (src == s)
            w[m] = 1.0 / len(cells) / max(int(m.sum()), MIN_CELL)
    return w * len(y) / w.sum()


def _multinomial(
    z: np.ndarray, y: np.ndarray, src: np.ndarray, c: float = C_REG
) -> tuple[np.ndarray, np.ndarray]:
    """A source- and class-balanced multinomial logistic regression on standardised ``z``: its
    coefficients (classes x columns) and intercepts, a class absent from training at -30."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=c, max_iter=2000).fit(z, y, sample_weight=sample_weights(y, src))
    coef = np.zeros((len(CLASSES), z.shape[1]))
    inter = np.full(len(CLASSES), -30.0)  # a class absent from training is never predicted
    for k, cls in enumerate(lr.classes_):
        coef[cls], inter[cls] = lr.coef_[k], lr.intercept_[k]
    return coef, inter


def fit(x: np.ndarray, y: np.ndarray, src: np.ndarray, c: float = C_REG) -> OpacityClassifier:
    """Standardise, then :func:`_multinomial`."""
    z = transform(x)
    mean, scale = z.mean(0), z.std(0) + 1e-6
    coef, inter = _multinomial((z - mean) / scale, y, src, c)
    features = FEATURES if z.shape[1] == len(FEATURES) else OPACITY_FEATURES
    return OpacityClassifier(mean, scale, coef, inter, features=features)


def fit_blended(
    x: np.ndarray, y: np.ndarray, src: np.ndarray, weight: float = TOTALS_WEIGHT
) -> OpacityClassifier:
    """:func:`fit` on every input (model selection's C) and the same regression on the two
    severity totals alone (E), their logits mixed ``1 - weight`` to ``weight`` (I). Both
    standardise the totals' columns alike (same images, same transform), so the mix is one
    linear model over C's standardised inputs: E's coefficients join C's on those columns."""
    full = fit(x, y, src)
    n = len(OPACITY_FEATURES)
    coef_e = np.zeros_like(full.coef)
    coef_e[:, n:], inter_e = _multinomial((transform(x)[:, n:] - full.mean[n:]) / full.scale[n:], y, src)
    full.coef = (1 - weight) * full.coef + weight * coef_e
    full.intercept = (1 - weight) * full.intercept + weight * inter_e
    return full


def fit_pair(x: np.ndarray, y: np.ndarray, src: np.ndarray) -> OpacityClassifier:
    """:func:`fit_blended` on every input, with its ``without_totals`` twin fitted on the same
    images' opacity measures alone (for films whose severity totals are withheld)."""
    model = fit_blended(x, y, src)
    model.without_totals = fit(x[:, : len(OPACITY_FEATURES)], y, src)
    return model


def out_of_group_severity(
    sev_feats: np.ndarray,
    targets: dict[str, np.ndarray],
    groups: np.ndarray,
    released: Any,
    folds: int = 5,
) -> tuple[dict[str, np.ndarray], str]:
    """Severity totals of every image from a :class:`models.severity.LungRidge` that never saw
    the image's patient group: the groups are split into ``folds``, and each fold is scored by a
    ridge refitted on the scored images (``targets``: NaN where unscored) of the other folds.
    Where a fold has fewer than :data:`MIN_SCORED` scored training images (a smoke run), the
    ``released`` ridge scores it instead. Returns the totals and how they were made."""
    from sklearn.model_selection import GroupKFold

    from models.severity import LungRidge

    scored = ~np.isnan(targets["geographic_extent"])
    totals = {k: np.zeros(len(groups)) for k in targets}
    refits, folds = 0, min(folds, len(np.unique(groups)))
    for _, test in GroupKFold(folds).split(groups, groups=groups):
        train = scored & ~np.isin(groups, np.unique(groups[test]))
        if train.sum() >= MIN_SCORED:
            ridge = LungRidge.fit(sev_feats[train], {k: v[train] for k, v in targets.items()})
            refits += 1
        else:
            ridge = released
        pred = ridge.predict(sev_feats[test])
        for k in targets:
            totals[k][test] = pred[k]["total"]
    how = (
        f"ridge refitted without the image's patient group ({folds} group folds)"
        if refits == folds
        else f"released ridge on {folds - refits} of {folds} folds (too few scored images)"
    )
    return totals, how


def load_grouped(
    cache: Path, data: Path
) -> tuple[dict[str, np.ndarray], list[Item], np.ndarray, np.ndarray, np.ndarray]:
    """The cache of :mod:`models.training.extract` with its images decoded, each image's
    :class:`~models.training.sources.Item`, class (-1: unused), source and patient group."""
    from models.training.extract import load

    arrays = load(cache, images=True)
    items = {it.file: it for it in index(data)}
    recs = [items[str(f)] for f in arrays["files"]]
    hashes = np.stack([dhash(im) for im in arrays["image"]])
    groups = hash_groups([[r.patient] + ([r.link] if r.link else []) for r in recs], hashes)
    return arrays, recs, np.array([r.label for r in recs]), np.array([r.source for r in recs]), groups


def severity_inputs(
    arrays: dict[str, np.ndarray],
    recs: list[Any],
    groups: np.ndarray,
    weights_dir: Path | None = None,
    registry: Path | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """:func:`out_of_group_severity` on the cache's severity features, with the radiologists'
    scores of ``recs`` (NaN where unscored) and the ridge released in ``registry`` for folds
    with too few scored images."""
    from models.registry import load_registry, load_ridge

    targets = {
        "geographic_extent": np.array([r.extent for r in recs], float),
        "opacity": np.array([r.opacity for r in recs], float),
    }
    released = load_ridge(weights_dir, load_registry(registry))
    return out_of_group_severity(arrays["severity_features"], targets, groups, released)


def extent_scores(extent: np.ndarray) -> np.ndarray:
    """The extent as a fixed score for :func:`loso_matrix`: minus for normal, plus for the rest."""
    return np.stack([-extent, extent, extent, extent], 1)


def auc(pos: np.ndarray, neg: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(pos) == 0 or len(neg) == 0:
        return None
    return round(float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])), 4)


def loso(
    x: np.ndarray,
    y: np.ndarray,
    src: np.ndarray,
    groups: np.ndarray,
    labelled: np.ndarray,
    withheld: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Out-of-source logits for every image (trained without its source and its groups), and
    the training mask of each fold; ``withheld`` images (severity totals withheld by the quality
    check) read by the fold's twin without the totals, as the node reads them."""
    logits = np.full((len(y), len(CLASSES)), np.nan)
    masks = {}
    withheld = np.zeros(len(y), bool) if withheld is None else withheld
    for s in SOURCES:
        test = src == s
        touched = np.isin(groups, np.unique(groups[test]))
        train = labelled & ~touched
        masks[s] = train
        model = fit_pair(x[train], y[train], src[train])
        logits[test] = model.logits_with(x[test], withheld[test])
    return logits, masks


def softmax(lg: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = lg / t
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def recompute(oof: dict[str, np.ndarray]) -> dict[str, Any]:
    """The out-of-source numbers of the card from the shipped predictions (``classification-loso.npz``)."""
    y, src = oof["label"], oof["source"].astype(str)
    labelled = y >= 0
    p = softmax(oof["logits"], float(oof["temperature"]))
    pred = p[labelled].argmax(1)
    return {
        "leave_one_source_out": loso_matrix(p, y, src, labelled),
        "accuracy_out_of_source": round(float((pred == y[labelled]).mean()), 4),
        "confusion_out_of_source": [
            [int(((y[labelled] == a) & (pred == b)).sum()) for b in range(4)] for a in range(4)
        ],
        "ece_out_of_source": ece(p[labelled], y[labelled]),
    }


def loso_matrix(p: np.ndarray, y: np.ndarray, src: np.ndarray, labelled: np.ndarray) -> dict[str, Any]:
    """Per held-out source: COVID-19 vs normal (the source's own normals where it has >= 50,
    and against every out-of-source normal), abnormal vs normal within the source."""
    out: dict[str, Any] = {}
    normals = labelled & (y == NORMAL)
    for s in SOURCES:
        m = labelled & (src == s)
        row: dict[str, Any] = {"n": int(m.sum()), "classes": sorted(CLASSES[c] for c in np.unique(y[m]))}
        cov = m & (y == COVID)
        if cov.any():
            row["covid19_vs_all_normals"] = auc(p[cov, COVID], p[normals, COVID])
            row["n_covid19"] = int(cov.sum())
            if (m & (y == NORMAL)).sum() >= 50:
                row["covid19_vs_own_normals"] = auc(p[cov, COVID], p[m & (y == NORMAL), COVID])
        own_normal = m & (y == NORMAL)
        if own_normal.sum() >= 50 and (m & (y != NORMAL)).any():
            row["abnormal_vs_normal"] = auc(1 - p[m & (y != NORMAL), NORMAL], 1 - p[own_normal, NORMAL])
            row["n_normal"] = int(own_normal.sum())
        out[s] = row
    return out


def source_probe(inputs: np.ndarray, src: np.ndarray, groups: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Balanced accuracy of telling the seven sources apart from ``inputs`` (patient-grouped 5-fold CV):
    a linear probe (as round 2's) and gradient-boosted trees (a stronger one)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    codes = np.array([SOURCES.index(s) for s in src])
    res = {}
    for name, make in (
        (
            "linear",
            lambda: make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
            ),
        ),
        (
            "boosted_trees",
            lambda: HistGradientBoostingClassifier(max_iter=150, class_weight="balanced", random_state=seed),
        ),
    ):
        pred = np.zeros(len(codes), int)
        with threadpool_limits(1):  # OpenMP threads on a shared CPU slow the trees down many times
            for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(
                inputs, codes, groups
            ):
                pred[te] = make().fit(inputs[tr], codes[tr]).predict(inputs[te])
        res[name] = round(float(balanced_accuracy_score(codes, pred)), 4)
    res["chance"] = round(1 / len(SOURCES), 4)
    return res


def fit_temperature(lg: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def nll(t: float) -> float:
        p = softmax(lg, t)
        return float(-(w * np.log(p[np.arange(len(y)), y] + 1e-12)).sum() / w.sum())

    return float(minimize_scalar(nll, bounds=(0.3, 5.0), method="bounded").x)


def threshold_at(scores: np.ndarray, sensitivity: float = TARGET_SENSITIVITY) -> float:
    pos = np.sort(scores)
    return float(pos[int(np.floor((1 - sensitivity) * len(pos)))])


def triage(
    x: np.ndarray,
    y: np.ndarray,
    src: np.ndarray,
    groups: np.ndarray,
    labelled: np.ndarray,
    extent: np.ndarray,
    assessable: np.ndarray,
    found: np.ndarray,
    temperature: float,
) -> dict[str, Any]:
    """The default rule ``covid19 >= auto or extent >= 4`` per held-out source, with ``auto``
    fitted without that source (nested leave-one-source-out), and the quality check's say:
    no class when nothing lung-like was found, no extent when the outline is not assessable
    (and the class then read without the totals)."""
    out: dict[str, Any] = {}
    withheld = found & ~assessable
    for s in SOURCES:
        test = src == s
        outer_train = labelled & ~np.isin(groups, np.unique(groups[test]))
        inner_scores = []
        for t in SOURCES:
            if t == s:
                continue
            tt = outer_train & (src == t) & (y == COVID)
            if not tt.any():
                continue
            train = outer_train & ~np.isin(groups, np.unique(groups[src == t]))
            model = fit_pair(x[train], y[train], src[train])
            inner_scores.append(softmax(model.logits_with(x[tt], withheld[tt]), temperature)[:, COVID])
        thr = threshold_at(np.concatenate(inner_scores))
        model = fit_pair(x[outer_train], y[outer_train], src[outer_train])
        p = softmax(model.logits_with(x[test], withheld[test]), temperature)[:, COVID]
        by_class = (p >= thr) & found[test]
        by_extent = (extent[test] >= EXTENT_URGENT) & assessable[test]
        urgent = by_class | by_extent
        row: dict[str, Any] = {"auto_threshold": round(thr, 4)}
        for name, c in (("covid19", COVID), ("normal", NORMAL)):
            m = labelled[test] & (y[test] == c)
            if m.sum():
                row[name] = {
                    "n": int(m.sum()),
                    "urgent": round(float(urgent[m].mean()), 4),
                    "by_covid19": round(float(by_class[m].mean()), 4),
                    "by_extent": round(float(by_extent[m].mean()), 4),
                }
        out[s] = row
    return out


def quality_table(qc: list[Any], y: np.ndarray, src: np.ndarray, labelled: np.ndarray) -> dict[str, Any]:
    """Share of films whose outline fails the check (not assessable), per source and class."""
    fail = np.array([not q.assessable for q in qc])
    none = np.array([not q.lungs_found for q in qc])
    out: dict[str, Any] = {}
    for s in SOURCES:
        for name, c in (("normal", NORMAL), ("covid19", COVID)):
            m = labelled & (src == s) & (y == c)
            if m.sum():
                reasons: dict[str, int] = {}
                for i in np.nonzero(m & fail)[0]:
                    for r in qc[i].reasons:
                        reasons[r] = reasons.get(r, 0) + 1
                out.setdefault(s, {})[name] = {
                    "n": int(m.sum()),
                    "not_assessable": round(float(fail[m].mean()), 4),
                    "nothing_found": round(float(none[m].mean()), 4),
                    "reasons": reasons,
                }
    normals = labelled & (y == NORMAL)
    out["all_normals"] = {"n": int(normals.sum()), "false_alarm": round(float(fail[normals].mean()), 4)}
    return out


def main(
    cache: Path,
    out: Path,
    data: Path,
    ship: bool = False,
    seed: int = 0,
    heat_n: int = 40,
    weights_dir: Path | None = None,
    registry: Path | None = None,
) -> dict[str, Any]:
    """Choose and measure the classifier on ``cache`` (:mod:`models.training.extract`); with
    ``ship``, write it to ``weights_dir`` and register it in ``registry`` (default: the package's)."""
    from models.training.extract import quality_check

    out.mkdir(parents=True, exist_ok=True)
    arrays, recs, y, src, groups = load_grouped(cache, data)
    labelled = y >= 0
    qc = [quality_check(arrays, i) for i in range(len(y))]
    assessable = np.array([q.assessable for q in qc])
    found = np.array([q.lungs_found for q in qc])
    sev, sev_how = severity_inputs(arrays, recs, groups, weights_dir, registry)
    extent = sev["geographic_extent"]
    x = classifier_inputs(arrays["features"], extent, sev["opacity"])
    report: dict[str, Any] = {
        "task": "classification",
        "protocol": PROTOCOL,
        "images": {s: int((src == s).sum()) for s in SOURCES},
        "labelled": {s: {CLASSES[c]: int(((src == s) & (y == c)).sum()) for c in range(4)} for s in SOURCES},
        "groups": {"n_groups": int(len(np.unique(groups))), "n_images": int(len(groups))},
        "features": list(FEATURES),
        "severity_inputs": sev_how,
    }
    cross = sum(len(set(src[groups == g])) > 1 for g in np.unique(groups))
    report["groups"]["groups_spanning_sources"] = int(cross)

    logits, _ = loso(x, y, src, groups, labelled, found & ~assessable)
    w = sample_weights(y[labelled], src[labelled])
    temperature = fit_temperature(logits[labelled], y[labelled], w)
    p = softmax(logits, temperature)
    report["temperature"] = round(temperature, 4)
    report["leave_one_source_out"] = loso_matrix(p, y, src, labelled)
    # extent alone, the reference point (no class training: the out-of-group ridge)
    report["extent_only"] = loso_matrix(extent_scores(extent), y, src, labelled)
    report["source_probe"] = {
        "classifier_inputs_and_outputs": source_probe(np.c_[transform(x), p], src, groups, seed),
        "note": f"7 sources; inputs: the {len(FEATURES)} features and the 4 out-of-source probabilities; "
        "all images",
    }
    report["quality"] = quality_table(qc, y, src, labelled)
    report["hannover_icu"] = hannover_icu(data, arrays["files"], extent)
    from models.training import heat

    report["heat"] = heat.main(cache, heat_n, seed=seed, weights_dir=weights_dir, registry=registry)
    report["triage"] = triage(x, y, src, groups, labelled, extent, assessable, found, temperature)
    pred = p[labelled].argmax(1)
    report["accuracy_out_of_source"] = round(float((pred == y[labelled]).mean()), 4)
    report["confusion_out_of_source"] = [
        [int(((y[labelled] == a) & (pred == b)).sum()) for b in range(4)] for a in range(4)
    ]
    final = fit_pair(x[labelled], y[labelled], src[labelled])
    final.temperature = temperature
    shipped_p = softmax(logits, temperature)[:, COVID]
    report["auto_threshold"] = round(threshold_at(shipped_p[labelled & (y == COVID)]), 4)
    report["ece_out_of_source"] = ece(p[labelled], y[labelled])
    np.savez_compressed(
        out / "loso.npz",
        files=arrays["files"],
        logits=logits,
        label=y,
        source=src,
        groups=groups,
        extent=extent,
        assessable=assessable,
        found=found,
        temperature=temperature,
    )
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "opacity-classifier.json").write_text(json.dumps(final.to_json(), indent=1))
    if ship:
        release(out, report, weights_dir, registry)
    return report


def hannover_icu(data: Path, files: np.ndarray, extent: np.ndarray, days: int = 3) -> dict[str, Any]:
    """AUC of the extent for ICU around the film (offsets in days from the film): ``in_icu_or_within``
    (in the ICU at the film or admitted within ``days``), and ``admitted_within`` (admitted 0..days
    after the film, among films of patients not yet in the ICU). Hannover films and their links."""
    import csv

    where = {str(f): i for i, f in enumerate(files)}
    rows = []
    with (Path(data) / "hannover" / "metadata.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            rel = (
                f"hannover/images/{row['file']}"
                if row["file"]
                else f"cxr-collection/images/{row['cxr_collection_file']}"
            )
            if rel in where:
                rows.append((where[rel], row))

    def num(v: str) -> float:
        return float(v) if v else float("nan")

    e, in_or, adm_e, adm = [], [], [], []
    for i, row in rows:
        a, r = num(row["icu_admission_offset"]), num(row["icu_release_offset"])
        in_icu = a <= 0 and (np.isnan(r) or r >= 0)
        e.append(extent[i])
        in_or.append(bool(in_icu or (0 <= a <= days)))
        if not in_icu:
            adm_e.append(extent[i])
            adm.append(bool(0 <= a <= days))
    e_, y_ = np.array(e), np.array(in_or)
    ae, ay = np.array(adm_e), np.array(adm)
    return {
        "days": days,
        "in_icu_or_within": {"n": len(e), "positives": int(y_.sum()), "auc": auc(e_[y_], e_[~y_])},
        "admitted_within": {"n": len(ae), "positives": int(ay.sum()), "auc": auc(ae[ay], ae[~ay])},
        "note": "per film; a patient's serial films are not independent",
    }


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > a) & (conf <= b)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - (pred[m] == y[m]).mean())
    return round(float(total), 4)


def release(
    out: Path, report: dict[str, Any], weights_dir: Path | None = None, registry: Path | None = None
) -> None:
    """Copy the coefficients into ``weights_dir`` and update the classification entry only."""
    import shutil

    from models.exceptions import RegistryError
    from models.registry import WEIGHTS_DIR, load_registry, sha256_file, update_registry
    from models.registry import entry as registered

    weights = Path(weights_dir or WEIGHTS_DIR)
    name = "opacity-classifier.json"
    shutil.copy(out / name, weights / name)
    shutil.copy(out / "loso.npz", weights / "classification-loso.npz")
    entry = {
        "name": "opacity-classifier",
        "version": VERSION,
        "file": name,
        "sha256": sha256_file(weights / name),
        "arch": {
            "class": "OpacityLogistic",
            "features": list(FEATURES),
            "without_totals": list(OPACITY_FEATURES),  # for films whose totals are withheld
        },
        "input_size": 256,
        "labels": list(CLASSES),
        "thresholds": {"covid19": report["auto_threshold"]},
        "temperature": report["temperature"],
        "training": {
            "seed": 0,
            "device": "cpu",
            "command": "python -m models.training.extract --out CACHE --every covid-radiography=4 "
            "nih=3, then "
            "python -m models.training.round3 --cache CACHE --out DIR --ship (CPU only; or "
            "cxr-node train)",
            "images": int(sum(sum(v.values()) for v in report["labelled"].values())),
            "data": "every labelled image of the seven sources (CPU budget: every 4th covid-radiography and "
            "every 3rd NIH image, in file order), "
            "after one resolution chain (256 -> 224 -> 256); features: LungNet's opacity inside the "
            "refined lungs and the severity ridge's two totals (each image's from a ridge refitted "
            "without its patient group); class- and source-balanced weights; the regression on "
            "every input and the one on the two totals alone, their logits averaged",
            "previous": "opacity-classifier@3.6.0 (the same, before the quality check's 'inverted' "
            "reason: its temperature and out-of-source numbers moved in the third decimal); 3.5.0 (the "
            "same, on films whose grey was scaled with "
            "their constant margins: a frame counted in the percentiles); 3.4.0 (the regression on "
            "every input alone, model selection's C); 3.3.0 (the same, on films whose constant margins were "
            "cropped only up to a fifth of each side); "
            "3.2.0 (the same without the twin: a film whose totals were "
            "withheld was classified on them); 3.1.0 (the 8 opacity features only); "
            "3.0.0 (on lung-net@2.0.0)",
        },
        "metrics": report,
    }
    # The model-selection table has its own writer (models.training.variants --record): kept.
    try:
        previous = registered("classification", load_registry(registry)).get("metrics", {})
    except RegistryError:
        previous = {}
    kept = {k: previous[k] for k in ("model_selection",) if k in previous}
    entry["metrics"] = {**report, **kept}
    update_registry({"classification": entry}, registry)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--ship", action="store_true")
    p.add_argument("--heat-n", type=int, default=40, help="images per unseen source for the heat measure")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rep = main(a.cache, a.out, a.data, a.ship, heat_n=a.heat_n)
    print(json.dumps({k: rep[k] for k in ("leave_one_source_out", "source_probe", "triage")}, indent=1))


if __name__ == "__main__":
    cli()
