"""Fit and measure the film-orientation model (:mod:`models.orientation`).

Every cached film (:mod:`models.training.extract`: the chained 256-px square and its content
box, as the node sees it) in each of the five :data:`~models.orientation.VIEWS`; the label is
the view, so no film needs a reader. Measured leaving each source out: the model is fitted on
the other six sources' films and applied to the held-out source's, in all five views. False
alarm: an upright film whose probability of upright is under
:data:`models.quality.MIN_UPRIGHT`; caught: a turned or flipped one under it. The shipped model
is then fitted on every source.

Its :class:`~models.orientation.ChestLikeness` (fitted on the upright films) gets its limit from
held-out films: each film's distance under the PCA of the other sources' films, the largest of
them, plus a tenth (:data:`LIMIT_MARGIN`). Its false alarms are measured one level further out:
for each source held out, the limit comes from the other six sources alone (each of them left
out in turn), and the held-out source's upright films are measured against it.

Its other-pictures regression (:class:`~models.orientation.OtherImages`) is fitted on the upright
films and one altered copy of each (:mod:`models.training.altered`, seed 0) against generated
pictures (:mod:`models.training.textures`, seed 0). Its false alarms on films framed or windowed
otherwise are measured the same way, on one copy of each kind of every film of the held-out
source (seed 1), beside the same regression fitted on the upright films alone; what it catches of
a kind of picture it never saw, with each family held out of the fit in turn.

    python -m models.training.orientation --cache CACHE --out DIR [--ship]
    python -m models.training.orientation --cache CACHE --unseen   # the films not in CACHE
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.orientation import (
    N_COMPONENTS,
    VIEWS,
    ChestLikeness,
    OrientationModel,
    OtherImages,
    orientation_features,
    view,
)
from models.training.altered import ALTERATIONS, alter
from models.training.sources import SOURCES
from models.training.textures import FAMILIES, sample

logger = logging.getLogger(__name__)

NAME = "film-orientation"
VERSION = "1.2.1"
FILE = "film-orientation.json"
C_REG = 0.01  # inverse L2 strength; 1,828 features, about 18,000 views
LIMIT_MARGIN = 1.1  # the chest-likeness limit: the largest held-out distance times this
OTHER_C = 0.1  # the other-images regression's inverse L2 strength (of 0.01-1: best held-out families)
OTHER_CUT = 0.8  # its probability at which a film is unlike a chest film
OTHER_PER_FAMILY = 500  # generated pictures of each family it is fitted on (seed 0)
OTHER_TEST_PER_FAMILY = 200  # and measured on (seed 1, never fitted on)


Film = tuple[str, np.ndarray, tuple[int, int, int, int]]  # source, chained square, content box


def cached_films(cache: Path, sources: tuple[str, ...] = SOURCES) -> list[Film]:
    """Every cached film of ``sources`` (:mod:`models.training.extract`), decoded once for all
    the features read off it."""
    from models.training.extract import load

    films: list[Film] = []
    for s in sources:
        arrays = load(cache, (s,), images=True)
        for img, box in zip(arrays["image"], arrays["box"], strict=True):
            r0, r1, c0, c1 = (int(b) for b in box)
            films.append((s, img, (r0, r1, c0, c1)))
    return films


def features(films: list[Film]) -> dict[str, np.ndarray]:
    """Every film's :func:`orientation_features` in each view: ``x`` (N * 5, F), ``view``,
    ``source`` (of each row)."""
    xs, views, srcs = [], [], []
    t0 = time.time()
    for s, img, (r0, r1, c0, c1) in films:
        for k in range(len(VIEWS)):
            xs.append(orientation_features(view(img[r0:r1, c0:c1], k)))
            views.append(k)
            srcs.append(s)
    logger.info("orientation features of %d films in %.0fs", len(films), time.time() - t0)
    return {"x": np.stack(xs), "view": np.array(views), "source": np.array(srcs)}


def altered_features(films: list[Film], seed: int, every_kind: bool = False) -> dict[str, np.ndarray]:
    """:func:`orientation_features` of the films altered (:mod:`models.training.altered`):
    one alteration of each film drawn at random, or (``every_kind``) one of each kind; ``x``,
    ``kind``, ``source`` of each row."""
    rng = np.random.default_rng(seed)
    kinds = list(ALTERATIONS)
    xs, drawn, srcs = [], [], []
    for s, img, box in films:
        for kind in kinds if every_kind else [kinds[int(rng.integers(len(kinds)))]]:
            xs.append(orientation_features(*alter(img, box, kind, rng)))
            drawn.append(kind)
            srcs.append(s)
    return {"x": np.stack(xs), "kind": np.array(drawn), "source": np.array(srcs)}


def generated(per_family: int, seed: int) -> dict[str, np.ndarray]:
    """:func:`orientation_features` of ``per_family`` pictures of each
    :data:`~models.training.textures.FAMILIES` (``x``, ``family``), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    xs, families = [], []
    for family in FAMILIES:
        for _ in range(per_family):
            xs.append(orientation_features(*sample(family, rng)))
            families.append(family)
    return {"x": np.stack(xs), "family": np.array(families)}


def rates(p_upright: np.ndarray, views: np.ndarray) -> dict[str, Any]:
    """False alarms on the upright views and the share caught of each other view."""
    from models.quality import not_upright

    flagged = not_upright(p_upright)
    out: dict[str, Any] = {
        "n": int((views == 0).sum()),
        "false_alarm": round(float(flagged[views == 0].mean()), 4),
    }
    for k, name in enumerate(VIEWS[1:], start=1):
        out[f"{name}_caught"] = round(float(flagged[views == k].mean()), 4)
    return out


def chest_limit(x: np.ndarray, src: np.ndarray) -> float:
    """:data:`LIMIT_MARGIN` times the largest distance of an upright film (rows of ``x``) under the
    :class:`ChestLikeness` of the other sources' films."""
    if len(np.unique(src)) < 2:
        raise ValueError("the chest-likeness limit needs films of at least two sources (one held out)")
    worst = max(float(ChestLikeness.fit(x[src != s]).distance(x[src == s]).max()) for s in np.unique(src))
    if not np.isfinite(worst):
        raise ValueError("chest-likeness distances not finite")
    return LIMIT_MARGIN * worst


def chest_likeness(
    x: np.ndarray, src: np.ndarray, others: np.ndarray | None = None, altered: np.ndarray | None = None
) -> ChestLikeness:
    """The chest-likeness of upright films ``x`` (sources ``src``): the PCA with its
    :func:`chest_limit`, and (``others``: generated pictures' features) its
    :class:`~models.orientation.OtherImages`, the films' side with ``altered`` films' features
    beside them."""
    chest = ChestLikeness.fit(x, chest_limit(x, src))
    if others is None:
        return chest
    films = x if altered is None else np.vstack([x, altered])
    return replace(chest, other=OtherImages.fit(films, others, OTHER_C, OTHER_CUT))


def held_out_chest(
    x: np.ndarray,
    src: np.ndarray,
    held: str,
    others: np.ndarray | None = None,
    altered: dict[str, np.ndarray] | None = None,
) -> ChestLikeness:
    """:func:`chest_likeness` of every source but ``held``, from those sources alone (``altered``:
    :func:`altered_features`, its rows of ``held`` left out)."""
    rest = src != held
    kept = None if altered is None else altered["x"][altered["source"] != held]
    return chest_likeness(x[rest], src[rest], others, kept)


def altered_rates(model: OrientationModel, altered: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of each kind of altered film that ``model`` withholds (turned, or unlike a
    chest film): false alarms, since each is a chest film."""
    from models.quality import not_upright, unlike_a_chest_film

    flagged = not_upright(model.proba(altered["x"])[:, 0]) | unlike_a_chest_film(
        model.chest.atypical(altered["x"])
    )
    return {kind: _share(flagged[altered["kind"] == kind]) for kind in ALTERATIONS}


def other_catches(
    x: np.ndarray, fitted: dict[str, np.ndarray], test: dict[str, np.ndarray], model: OrientationModel
) -> dict[str, Any]:
    """For each family held out, the share of its ``test`` pictures withheld as unlike a chest
    film or turned: ``before``, by ``model``'s PCA distance or its orientation; ``now``, the same
    with an other-images measure fitted on the chest films ``x`` (upright and altered) and the
    ``fitted`` pictures of the other families; ``other_alone``, by that measure alone."""
    from models.quality import not_upright, unlike_a_chest_film

    out: dict[str, Any] = {}
    for family in FAMILIES:
        rest = fitted["family"] != family
        other = OtherImages.fit(x, fitted["x"][rest], OTHER_C, OTHER_CUT)
        feats = test["x"][test["family"] == family]
        turned = not_upright(model.proba(feats)[:, 0])
        out[family] = {
            "n": len(feats),
            "before": _share(turned | unlike_a_chest_film(replace(model.chest, other=None).atypical(feats))),
            "now": _share(turned | unlike_a_chest_film(replace(model.chest, other=other).atypical(feats))),
            "other_alone": _share(unlike_a_chest_film(other.proba(feats) / other.cut)),
        }
    return out


def _share(flags: np.ndarray) -> float:
    return round(float(np.mean(flags)), 4)


def atypical_rates(atypical: np.ndarray, views: np.ndarray) -> dict[str, Any]:
    """The upright films the chest-likeness calls unlike a chest film (its false alarms), and the
    share of the turned and flipped views it calls so (for information: the orientation model is
    what catches those)."""
    from models.quality import unlike_a_chest_film

    flagged = unlike_a_chest_film(atypical)
    return {
        "atypical_false_alarm": round(float(flagged[views == 0].mean()), 4),
        "atypical_upright_max": round(float(atypical[views == 0].max()), 3),
        "atypical_turned": round(float(flagged[views != 0].mean()), 4),
    }


def main(
    cache: Path,
    out: Path,
    ship: bool = False,
    weights_dir: Path | None = None,
    registry: Path | None = None,
    per_family: tuple[int, int] = (OTHER_PER_FAMILY, OTHER_TEST_PER_FAMILY),
) -> dict[str, Any]:
    """Leave-one-source-out rates, then the model fitted on every source (``ship``: released);
    ``per_family``: the generated pictures of each family fitted on and measured on."""
    from models.quality import MIN_UPRIGHT

    out.mkdir(parents=True, exist_ok=True)
    sources = tuple(s for s in SOURCES if (Path(cache) / f"{s}.npz").is_file())
    films = cached_films(cache, sources)
    data = features(films)
    x, v, src = data["x"], data["view"], data["source"]
    t0 = time.time()
    others, others_test = generated(per_family[0], seed=0), generated(per_family[1], seed=1)
    altered_fit = altered_features(films, seed=0)
    altered_test = altered_features(films, seed=1, every_kind=True)
    logger.info(
        "features of %d generated pictures and %d altered films in %.0fs",
        len(others["x"]) + len(others_test["x"]),
        len(altered_fit["x"]) + len(altered_test["x"]),
        time.time() - t0,
    )
    report: dict[str, Any] = {
        "task": "orientation",
        "protocol": "leave one source out: fitted on the other sources' films in all five views, "
        f"applied to the held-out source's; flagged when P(upright) < {MIN_UPRIGHT}",
        "views": list(VIEWS),
        "leave_one_source_out": {},
    }
    up = v == 0
    pooled_p, pooled_v, pooled_a = [], [], []
    for s in sources:
        test = src == s
        if test.all() or not test.any():
            continue
        chest = held_out_chest(x[up], src[up], s, others["x"], altered_fit)
        model = OrientationModel.fit(x[~test], v[~test], C_REG, chest)
        p = model.proba(x[test])[:, 0]
        atypical = chest.atypical(x[test])
        held_altered = {k: a[altered_test["source"] == s] for k, a in altered_test.items()}
        rest = up & ~test
        without_altered = OtherImages.fit(x[rest], others["x"], OTHER_C, OTHER_CUT)
        without = replace(model, chest=replace(chest, other=without_altered))
        report["leave_one_source_out"][s] = {
            **rates(p, v[test]),
            **atypical_rates(atypical, v[test]),
            "altered_withheld": altered_rates(model, held_altered),
            "altered_withheld_fitted_without_altered": altered_rates(without, held_altered),
        }
        pooled_p.append(p)
        pooled_v.append(v[test])
        pooled_a.append(atypical)
        logger.info("orientation, %s held out: %s", s, report["leave_one_source_out"][s])
    if pooled_p:
        pv = np.concatenate(pooled_v)
        pa = np.concatenate(pooled_a)
        report["all"] = {**rates(np.concatenate(pooled_p), pv), **atypical_rates(pa, pv)}
    chest = chest_likeness(x[up], src[up], others["x"], altered_fit["x"])
    report["chest_likeness"] = {
        "components": int(chest.components.shape[0]),
        "limit": round(chest.limit, 1),
        "rule": f"{LIMIT_MARGIN} x the largest distance of an upright film with its source left out",
        "other_images": f"logistic regression (C {OTHER_C}) of the upright films and one altered copy "
        "of each (models.training.altered) against "
        f"{per_family[0]} generated pictures of each of {len(FAMILIES)} families (seed 0); "
        f"unlike a chest film at P >= {OTHER_CUT}",
    }
    final = OrientationModel.fit(x, v, C_REG, chest)
    chest_films = np.vstack([x[up], altered_fit["x"]])
    report["chest_likeness"]["families_held_out"] = other_catches(chest_films, others, others_test, final)
    OrientationModel.from_json(final.to_json())  # what the node would refuse is not written
    (out / FILE).write_text(json.dumps(final.to_json()))
    report["films"] = int((v == 0).sum())
    (out / "report.json").write_text(json.dumps(report, indent=1))
    if ship:
        release(out, report, weights_dir, registry)
    return report


def release(
    out: Path, report: dict[str, Any], weights_dir: Path | None = None, registry: Path | None = None
) -> None:
    from models.registry import WEIGHTS_DIR, sha256_file, update_registry

    weights = Path(weights_dir or WEIGHTS_DIR)
    shutil.copy(out / FILE, weights / FILE)
    entry = {
        "name": NAME,
        "version": VERSION,
        "file": FILE,
        "sha256": sha256_file(weights / FILE),
        "arch": {
            "class": "OrientationLogistic",
            "features": "HOG (9 orientations, 8 x 8 cells, 2 x 2 blocks) of the content box resized "
            "to 64 px and standardised, + its 8 x 8 thumbnail",
            "views": list(VIEWS),
            "chest_likeness": "probabilistic PCA of the upright films' features "
            f"({N_COMPONENTS} components), squared Mahalanobis distance over a limit; and a logistic "
            "regression of the same films against generated pictures (models.training.textures), "
            "its probability over a cut",
        },
        "input_size": 256,
        "labels": list(VIEWS),
        "training": {
            "seed": 0,
            "device": "cpu",
            "command": "python -m models.training.extract --out CACHE --every covid-radiography=4 nih=3, "
            "then python -m models.training.orientation --cache CACHE --out DIR --ship (CPU only; "
            "or cxr-node train)",
            "images": report["films"],
            "data": "every cached film of the seven sources (the classifier's cache), each in the five "
            "views; the label is the view; for the chest-likeness, the upright films and one altered "
            "copy of each (tilted, cropped tight, collimated or windowed otherwise: "
            f"models.training.altered) against {OTHER_PER_FAMILY} generated pictures of each of "
            f"{len(FAMILIES)} families",
            "previous": "film-orientation 1.2.0 (the same, the chest films' side of the other-pictures "
            "regression the upright films alone: it withheld films tilted, cropped tight or collimated); "
            "1.1.1 (the same, the chest-likeness its PCA distance alone: "
            "smooth random textures passed it); 1.1.0 (the same, on films whose grey was scaled with their "
            "constant margins); 1.0.0 (the same views, without the chest-likeness); before it, "
            "films turned were caught by LungNet's confidence read turned "
            "(82 % turned 90, 48 % turned 180, 26 % flipped; 160 normals)",
        },
        "metrics": report,
    }
    update_registry({"orientation": entry}, registry)


def unseen(cache: Path, data: Path) -> dict[str, Any]:
    """The released model on every film of the data release that is not in ``cache`` (the films
    it was fitted on): how many, and the ones it withholds (turned or unlike a chest film), with
    their probability of upright and ``atypical``. Every 4th covid-radiography and every 3rd NIH
    film are cached, so the rest of those two sources are films it never saw."""
    from models.quality import not_upright, unlike_a_chest_film
    from models.registry import build_model
    from models.training.extract import not_cached, prepare

    model = build_model("orientation")
    items = not_cached(cache, data)
    flagged: dict[str, Any] = {}
    for it in items:
        upright, atypical = model.read(*prepare(data, it))
        if not_upright(upright) or unlike_a_chest_film(atypical):
            flagged[it.file] = {"upright": round(upright, 3), "atypical": round(atypical, 3)}
    return {"films": dict(Counter(it.source for it in items)), "withheld": flagged}


def cli() -> None:
    from models.training.sources import DEFAULT_DATA

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, help="fit and measure into this folder")
    p.add_argument("--ship", action="store_true", help="copy into models/weights and register")
    p.add_argument("--unseen", action="store_true", help="the released model on the films not in the cache")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.unseen:
        print(json.dumps(unseen(a.cache, DEFAULT_DATA), indent=1))
    elif a.out:
        print(json.dumps(main(a.cache, a.out, a.ship), indent=1))
    else:
        p.error("give --out (fit and measure) or --unseen")


if __name__ == "__main__":
    cli()
