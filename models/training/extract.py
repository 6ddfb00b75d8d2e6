"""Run the shipped LungNet once over every image of the data release and cache what it says.

Each image: :func:`models.preprocessing.preprocess` to the 256-px square (as the node does),
:func:`models.evidence.resolution_chain` (down to 224 px and back), one LungNet pass (frozen,
eval mode). Cached per source (``<out>/<source>.npz``, no pickles): the chained image (JPEG
bytes), cleaned lung masks (bit-packed), the opacity map at 64 px, the classifier's features
(:data:`models.evidence.FEATURES`), the severity ridge's per-lung features, the content box
of the square (for the quality check), and the class logits.

    nice python -m models.training.extract --data ../shared/data --out /work/cache15
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.evidence import opacity_features, resolution_chain
from models.preprocessing import load_image, model_square, network_input
from models.quality import LungQC
from models.training.corpus import decode_jpeg, encode_jpeg
from models.training.sources import DEFAULT_DATA, SOURCES, Item, index

logger = logging.getLogger(__name__)
SIZE = 256


def chained(pixels: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A picture as the models see a film: (chained 256-px uint8 square, content box r0 r1 c0 c1
    in the square)."""
    img8, geom = model_square(pixels, SIZE)
    return resolution_chain(img8), geom.content_box


def prepare(data: Path, item: Item) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """:func:`chained` of the item's image."""
    return chained(load_image(Path(data) / item.file).pixels)


def run(
    net: object, images8: np.ndarray, boxes: list[tuple[int, int, int, int]], mirror: bool = False
) -> dict[str, np.ndarray]:
    """LungNet on chained squares; the features read inside the refined lungs, as the node does
    (``mirror``: with the test-time flip of :func:`models.segmentation.lungnet_outputs`)."""

    from models.networks import OPACITY
    from models.quality import refine_lungs
    from models.segmentation import lungnet_outputs
    from models.severity import severity_matrix

    x = network_input(images8)
    out = lungnet_outputs(net, x, mirror)
    raw = out["lungs"]
    out["lungs"] = np.stack([refine_lungs(images8[i], raw[i], boxes[i]) for i in range(len(images8))])
    opac = out["maps"][:, OPACITY]
    feats = np.stack([opacity_features(opac[i], out["lungs"][i]) for i in range(len(images8))])
    small = opac.reshape(len(opac), 64, 4, 64, 4).mean((2, 4))
    return {
        "features": feats,
        "severity_features": severity_matrix(images8, out),
        "lungs_bits": np.packbits(out["lungs"], axis=-1),
        "raw_lungs_bits": np.packbits(raw, axis=-1),
        "opacity64": np.round(small * 255).astype(np.uint8),
        "logits": out["logits"],
    }


def extract(
    data: Path,
    out: Path,
    sources: tuple[str, ...] = SOURCES,
    limit: int = 0,
    batch: int = 32,
    subsample: dict[str, int] | None = None,
    weights_dir: Path | None = None,
    registry: Path | None = None,
    mirror: bool = False,
    prepare_fn: Callable[[Path, Item], tuple[np.ndarray, tuple[int, int, int, int]]] = prepare,
) -> None:
    """Run the LungNet of ``registry`` (default: the shipped one) over the sources' images, each
    made ready by ``prepare_fn`` (default :func:`prepare`, as the node does)."""
    import torch

    from models.registry import build_model, load_registry

    subsample = subsample or {}
    torch.set_num_threads(2)
    net = build_model("segmentation", "cpu", weights_dir, load_registry(registry))
    items = index(data)
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        chosen = [it for it in items if it.source == source]
        if source in subsample:  # every k-th image of a large folder (CPU time)
            chosen = chosen[:: subsample[source]]
        if limit:
            chosen = chosen[:limit]
        t0 = time.time()
        parts: dict[str, list[np.ndarray]] = {}
        jpegs: list[bytes] = []
        for s in range(0, len(chosen), batch):
            prepared = [prepare_fn(data, it) for it in chosen[s : s + batch]]
            imgs = np.stack([p[0] for p in prepared])
            res = run(net, imgs, [p[1] for p in prepared], mirror)
            res["box"] = np.array([p[1] for p in prepared], np.int16)
            for k, v in res.items():
                parts.setdefault(k, []).append(v)
            jpegs += [encode_jpeg(im) for im in imgs]
            logger.info("%s %d/%d %.1fs", source, s + len(prepared), len(chosen), time.time() - t0)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        arrays["jpeg"] = np.frombuffer(b"".join(jpegs), np.uint8)
        arrays["jpeg_offsets"] = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
        arrays["files"] = np.array([it.file for it in chosen])
        np.savez_compressed(out / f"{source}.npz", **arrays)  # type: ignore[arg-type]
        logger.info("%s: %d images in %.0fs", source, len(chosen), time.time() - t0)


def quality_check(arrays: dict[str, np.ndarray], i: int) -> LungQC:
    """The node's quality check of cached image ``i`` (its refined lungs in its content box),
    without the film-orientation model's two questions (turned? like a chest film?): the cached
    films are the training sources' own, upright, and that model's held-out rates on them are in
    its card."""
    from models.quality import check

    r0, r1, c0, c1 = (int(v) for v in arrays["box"][i])
    return check(arrays["image"][i], arrays["lungs"][i], (r0, r1, c0, c1))


def not_cached(cache: Path, data: Path) -> list[Item]:
    """The films of the data release that are not in ``cache`` (every 4th covid-radiography and
    every 3rd NIH film are cached: the rest of those two sources)."""
    cached = {str(f) for f in load(cache)["files"]}
    return [it for it in index(data) if it.file not in cached]


def load(out: Path, sources: tuple[str, ...] = SOURCES, images: bool = False) -> dict[str, np.ndarray]:
    """The cached sources concatenated (in :data:`SOURCES` order); ``images``: decode the JPEGs."""
    merged: dict[str, list[np.ndarray]] = {}
    for source in sources:
        with np.load(Path(out) / f"{source}.npz", allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        raw, off = d.pop("jpeg").tobytes(), d.pop("jpeg_offsets")
        if images:
            d["image"] = np.stack([decode_jpeg(raw[off[i] : off[i + 1]]) for i in range(len(off) - 1)])
        for key in ("lungs", "raw_lungs"):
            d[key] = np.unpackbits(d.pop(key + "_bits"), axis=-1)[..., :SIZE].astype(bool)
        for k, v in d.items():
            merged.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in merged.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sources", nargs="*", default=list(SOURCES))
    p.add_argument("--limit", type=int, default=0, help="first N images per source (a smoke run)")
    p.add_argument("--every", nargs="*", default=[], help="SOURCE=K: every K-th image of that source")
    p.add_argument("--mirror", action="store_true", help="test-time flip (measured, not served)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    every = {k: int(v) for k, v in (e.split("=") for e in a.every)}
    extract(a.data, a.out, tuple(a.sources), a.limit, subsample=every, mirror=a.mirror)


if __name__ == "__main__":
    main()
