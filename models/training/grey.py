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
    inside the content box, blended with the film as it is by ``strength``. The whole square goes
    through the map, its black padding too (to the reference's grey at the film's own black)."""
    r0, r1, c0, c1 = (int(v) for v in box)
    if not (0 <= r0 < r1 <= img8.shape[0] and 0 <= c0 < c1 <= img8.shape[1]):
        raise ValueError(f"content box {box} is empty or outside the {img8.shape} square")
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


def content_boxes(data: Path, files: np.ndarray) -> list[Box]:
    """Each film's content box in its 256-px square, as :func:`models.preprocessing.model_square`
    finds it (the corpus stores the squares, JPEG-compressed, not the boxes)."""
    from models.preprocessing import load_image, model_square

    return [model_square(load_image(Path(data) / str(f)).pixels, 256)[1].content_box for f in files]


def finetune(data: Path, ref: np.ndarray, strength: float, epochs: int, out: Path, seed: int = 0) -> Any:
    """The shipped LungNet fine-tuned on matched films: :func:`models.training.fit.train_lungnet`
    from its weights (batch 8, peak learning rate 5e-4, ``epochs`` over LungNet's training images,
    the same hold-out), on the CPU. Saved to ``out/lung-net.pt``; returns the network."""
    import torch

    from models.registry import build_model
    from models.training.corpus import cached
    from models.training.fit import Plan, segmentation_holdout, train_lungnet

    torch.set_num_threads(2)
    arrays = cached(data)
    boxes = content_boxes(data, arrays["files"])
    images = np.stack([match(im, b, ref, strength) for im, b in zip(arrays["image"], boxes, strict=True)])
    plan = Plan(quick=True)
    plan.lung_epochs, plan.lung_batch = epochs, 8
    train_idx = np.nonzero(~segmentation_holdout(arrays))[0]
    net = build_model("segmentation", "cpu").train()
    net, log = train_lungnet(arrays, torch.from_numpy(images), train_idx, None, plan, seed, "cpu", net, 5e-4)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "lung-net.pt")
    (out / "finetune.json").write_text(json.dumps(log))
    return net.eval()


def lungnet_measures(data: Path, ref: np.ndarray, strength: float, net: Any = None) -> dict[str, Any]:
    """Plain and matched: held-out lung Dice per source (each source's own mask style, as
    :func:`models.training.fit.segmentation_metrics`) and Cohen's protocols (the ridge refitted on
    each training half's features, as :func:`models.training.fit.severity_protocols`)."""
    import torch

    from models.evidence import resolution_chain
    from models.registry import build_model
    from models.severity import severity_matrix
    from models.training.corpus import STYLE_NONE, build_index, scored, severity_targets, square_and_masks
    from models.training.fit import (
        run_lungnet,
        segmentation_holdout,
        segmentation_metrics,
        severity_protocols,
    )

    torch.set_num_threads(2)
    recs = build_index(data)
    fields = ("patient", "extent", "opacity", "in_cohen_2020", "style", "source")
    every = {k: np.array([getattr(r, k) for r in recs]) for k in fields}
    held = segmentation_holdout(every) & (every["style"] != STYLE_NONE)
    rows = np.nonzero(held | scored(every))[0]
    films = [square_and_masks(Path(data), recs[i]) for i in rows]
    squares, boxes = [f[0] for f in films], [f[1].content_box for f in films]
    arrays = {k: v[rows] for k, v in every.items()}
    arrays |= {
        "lungs": np.stack([f[2] for f in films]),
        "opac": np.stack([f[3] for f in films]),
        "has_opac": np.array([recs[i].opacity_masks is not None for i in rows]),
    }
    seg_rows, sev_rows = np.nonzero(held[rows])[0], np.nonzero(scored(arrays))[0]
    plain = build_model("segmentation", "cpu")
    runs = (("plain", 0.0, plain), ("matched", strength, net if net is not None else plain))
    out: dict[str, Any] = {}
    for name, s, lungnet in runs:
        x = np.stack(
            [
                resolution_chain(match(im, b, ref, s) if s else im)
                for im, b in zip(squares, boxes, strict=True)
            ]
        )
        pred = run_lungnet(lungnet, torch.from_numpy(x), np.arange(len(x)), "cpu", 16)
        seg = segmentation_metrics(arrays, seg_rows, {k: v[seg_rows] for k, v in pred.items()})
        sev_pred = {k: v[sev_rows] for k, v in pred.items()}
        protocols = severity_protocols(
            severity_matrix(x[sev_rows], sev_pred),
            severity_targets(arrays, sev_rows),
            arrays["patient"][sev_rows],
            arrays["in_cohen_2020"][sev_rows],
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
    cache: Path,
    out: Path,
    strength: float,
    every: dict[str, int],
    data: Path = DEFAULT_DATA,
    finetune_epochs: int = 0,
) -> dict[str, Any]:
    """The reference from ``cache``, the matched cache at ``out`` (the films of ``cache``: the same
    ``every``), and :func:`lungnet_measures`; with ``finetune_epochs``, read by the shipped
    LungNet fine-tuned on matched films (:func:`finetune`) instead."""
    from models.registry import REGISTRY_PATH, load_registry, sha256_file
    from models.training.extract import extract, load

    ref_films = load(cache, REFERENCE_SOURCES, images=True)
    ref = reference(ref_films["image"], ref_films["box"])
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"strength": strength, "finetune_epochs": finetune_epochs}
    (out / "grey.json").write_text(json.dumps({**meta, "reference": ref.round(3).tolist()}))
    net, weights, registry = None, None, None
    if finetune_epochs:
        weights = out / "weights"
        net = finetune(data, ref, strength, finetune_epochs, weights)
        reg = load_registry(REGISTRY_PATH)
        reg["models"]["segmentation"]["sha256"] = sha256_file(weights / "lung-net.pt")
        registry = weights / "registry.json"
        registry.write_text(json.dumps(reg, indent=1))
    extract(
        data,
        out,
        subsample=every,
        prepare_fn=matched_prepare(ref, strength),
        weights_dir=weights,
        registry=registry,
    )
    return {**lungnet_measures(data, ref, strength, net), "finetune_epochs": finetune_epochs}


def label(meta: dict[str, Any]) -> str:
    """How a run is named in the registry and the card: its strength, and the fine-tuning."""
    epochs = meta.get("finetune_epochs") or 0
    return f"strength {meta['strength']:g}" + (
        f", LungNet fine-tuned on them {epochs} epochs (CPU)" if epochs else ""
    )


def record(result: dict[str, Any], registry: Path | None = None) -> None:
    """Write ``result`` into ``metrics.model_selection.grey_matching`` under its :func:`label`."""
    from models.registry import entry, load_registry, update_registry

    classification = entry("classification", load_registry(registry))
    selection = classification["metrics"].setdefault("model_selection", {})
    selection.setdefault("grey_matching", {})[label(result)] = result
    update_registry({"classification": classification}, registry)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the cache of models.training.extract")
    p.add_argument("--out", type=Path, required=True, help="the matched films' cache")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--strength", type=float, default=1.0, help="1: matched; 0.5: half way")
    p.add_argument("--every", nargs="*", default=[], help="SOURCE=K, as the first cache was extracted")
    p.add_argument(
        "--finetune", type=int, default=0, help="EPOCHS: LungNet fine-tuned on matched films first"
    )
    p.add_argument("--record", action="store_true", help="write the measures into the registry")
    a = p.parse_args()
    every = {k: int(v) for k, v in (e.split("=") for e in a.every)}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = main(a.cache, a.out, a.strength, every, a.data, a.finetune)
    print(json.dumps(result, indent=1))
    if a.record:
        record(result)


if __name__ == "__main__":
    cli()
