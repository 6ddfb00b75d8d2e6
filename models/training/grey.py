"""Grey matching, measured and not served: each film's grey levels mapped onto one reference
before LungNet reads it.

The grey levels inside the film's content box are mapped, through their ranks, onto the mean
quantile function of the cached films of LungNet's own training sources (cxr-collection,
Montgomery, Shenzhen). A window or gamma the film came with changes no rank, so it no longer
changes what LungNet reads. ``strength`` blends the matched film with the film as it is (1: matched
only). The shipped LungNet was trained on films as they are, not matched.

    python -m models.training.grey --cache CACHE --out CACHE2 --every covid-radiography=4 nih=3
        [--strength 1.0] [--record]

writes ``CACHE2``, the cache of :mod:`models.training.extract` for the same films with LungNet
reading them matched (``models.training.variants --matched CACHE2`` scores the classifier on it),
and measures what matching does to LungNet's own numbers, plain against matched: lung Dice on
the patients LungNet never saw, and Cohen's protocols (the severity ridge refitted on the
matched films' features). ``--record`` writes those into the classification entry's
``metrics.model_selection.grey_matching``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.training.sources import DEFAULT_DATA, Item

LEVELS = np.linspace(0.0, 1.0, 257)
REFERENCE_SOURCES = ("cxr", "montgomery", "shenzhen")  # LungNet's training sources
Box = tuple[int, int, int, int]


def _content(img8: np.ndarray, box: Box) -> np.ndarray:
    r0, r1, c0, c1 = (int(v) for v in box)
    return np.asarray(img8)[r0:r1, c0:c1]


def reference(images8: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The mean quantile function (at :data:`LEVELS`) of the films' content boxes."""
    return np.mean([np.quantile(_content(im, b), LEVELS) for im, b in zip(images8, boxes, strict=True)], 0)


def match(img8: np.ndarray, box: Box, ref: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``img8`` with each grey level mapped to ``ref`` at the mid-rank of that level's pixels
    inside the content box, blended with the film as it is by ``strength``."""
    hist = np.bincount(_content(img8, box).ravel(), minlength=256).astype(np.float64)
    share = hist / hist.sum()
    lut = np.interp(np.cumsum(share) - share / 2, LEVELS, ref)
    mapped = strength * lut[img8] + (1.0 - strength) * img8.astype(np.float64)
    return np.clip(np.round(mapped), 0, 255).astype(np.uint8)


def matched_prepare(ref: np.ndarray, strength: float) -> Any:
    """:func:`models.training.extract.prepare` with the square matched before the chain."""
    from models.evidence import resolution_chain
    from models.preprocessing import load_image, model_square
    from models.training.extract import SIZE

    def prepare(data: Path, item: Item) -> tuple[np.ndarray, Box]:
        img8, geom = model_square(load_image(Path(data) / item.file).pixels, SIZE)
        return resolution_chain(match(img8, geom.content_box, ref, strength)), geom.content_box

    return prepare


def lungnet_measures(data: Path, ref: np.ndarray, strength: float) -> dict[str, Any]:
    """Plain and matched: held-out lung Dice per source (each source's own mask style, as
    :func:`models.training.fit.segmentation_metrics`) and Cohen's protocols (the ridge refitted on
    each training half's features, as :func:`models.training.fit.severity_protocols`)."""
    import torch

    from models.evidence import resolution_chain
    from models.preprocessing import load_image, model_square
    from models.registry import build_model
    from models.severity import severity_matrix
    from models.training.corpus import STYLE_NONE, build_index, cache_one
    from models.training.fit import in_holdout, run_lungnet, segmentation_metrics, severity_protocols

    torch.set_num_threads(2)
    recs = build_index(data)
    scored = np.array([not np.isnan(r.extent) for r in recs])
    scored_patients = {r.patient for r, s in zip(recs, scored, strict=True) if s}
    held = np.array(
        [
            r.style != STYLE_NONE and (r.patient in scored_patients or in_holdout(np.array([r.patient]))[0])
            for r in recs
        ]
    )
    rows = np.nonzero(held | scored)[0]
    squares, boxes, lungs, opac = [], [], [], []
    for i in rows:
        _, lung_bits, opac_bits = cache_one((str(data), recs[i]))
        lungs.append(np.unpackbits(lung_bits, axis=-1)[..., :256].astype(bool))
        opac.append(np.unpackbits(opac_bits, axis=-1)[..., :256].astype(bool))
        img8, geom = model_square(load_image(Path(data) / recs[i].file).pixels, 256)
        squares.append(img8)
        boxes.append(geom.content_box)
    arrays = {
        "style": np.array([recs[i].style for i in rows]),
        "source": np.array([recs[i].source for i in rows]),
        "lungs": np.stack(lungs),
        "opac": np.stack(opac),
        "has_opac": np.array([recs[i].opacity_masks is not None for i in rows]),
    }
    seg_rows, sev_rows = np.nonzero(held[rows])[0], np.nonzero(scored[rows])[0]
    net = build_model("segmentation", "cpu")
    out: dict[str, Any] = {}
    for name, s in (("plain", 0.0), ("matched", strength)):
        x = np.stack(
            [
                resolution_chain(match(im, b, ref, s) if s else im)
                for im, b in zip(squares, boxes, strict=True)
            ]
        )
        pred = run_lungnet(net, torch.from_numpy(x), np.arange(len(x)), "cpu", 16)
        seg = segmentation_metrics(arrays, seg_rows, {k: v[seg_rows] for k, v in pred.items()})
        sev_pred = {k: v[sev_rows] for k, v in pred.items()}
        protocols = severity_protocols(
            severity_matrix(x[sev_rows], sev_pred),
            {
                "geographic_extent": np.array([recs[rows[i]].extent for i in sev_rows], float),
                "opacity": np.array([recs[rows[i]].opacity for i in sev_rows], float),
            },
            np.array([recs[rows[i]].patient for i in sev_rows]),
            np.array([recs[rows[i]].in_cohen_2020 for i in sev_rows]),
            50,
        )
        out[name] = {
            "lung_dice": {
                k: v["dice"]["mean"] for k, v in seg.items() if isinstance(v, dict) and "dice" in v
            },
            "opacity_dice": seg["opacity_dice"]["mean"] if seg["opacity_dice"] else None,
            **{
                p: {
                    t: {m: protocols[p][t][m]["mean"] for m in ("pearson", "mae")}
                    for t in ("geographic_extent", "opacity")
                }
                for p in ("cohen94", "cv234")
            },
        }
    return {
        "strength": strength,
        "held_out_images": int(len(seg_rows)),
        "scored_images": int(len(sev_rows)),
        **out,
    }


def main(
    cache: Path, out: Path, strength: float, every: dict[str, int], data: Path = DEFAULT_DATA
) -> dict[str, Any]:
    """The reference from ``cache``, the matched cache at ``out`` (the films of ``cache``: the same
    ``every``), and :func:`lungnet_measures`."""
    from models.training.extract import extract, load

    ref_films = load(cache, REFERENCE_SOURCES, images=True)
    ref = reference(ref_films["image"], ref_films["box"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "grey.json").write_text(json.dumps({"strength": strength, "reference": ref.round(3).tolist()}))
    extract(data, out, subsample=every, prepare_fn=matched_prepare(ref, strength))
    return lungnet_measures(data, ref, strength)


def record(result: dict[str, Any], registry: Path | None = None) -> None:
    """Write ``result`` into ``metrics.model_selection.grey_matching`` under its strength."""
    from models.registry import entry, load_registry, update_registry

    classification = entry("classification", load_registry(registry))
    selection = classification["metrics"].setdefault("model_selection", {})
    selection.setdefault("grey_matching", {})[f"{result['strength']:g}"] = result
    update_registry({"classification": classification}, registry)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the cache of models.training.extract")
    p.add_argument("--out", type=Path, required=True, help="the matched films' cache")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--strength", type=float, default=1.0, help="1: matched; 0.5: half way")
    p.add_argument("--every", nargs="*", default=[], help="SOURCE=K, as the first cache was extracted")
    p.add_argument("--record", action="store_true", help="write the measures into the registry")
    a = p.parse_args()
    every = {k: int(v) for k, v in (e.split("=") for e in a.every)}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = main(a.cache, a.out, a.strength, every, a.data)
    print(json.dumps(result, indent=1))
    if a.record:
        record(result)


if __name__ == "__main__":
    cli()
