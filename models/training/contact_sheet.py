"""Contact sheets from the cache of :mod:`models.training.extract`.

- Lung outlines on portable/ICU films, before (LungNet's raw outline) and after (the refined
  outline the node reports, green when the quality check passes, orange with its reason when it
  does not)::

    python -m models.training.contact_sheet --cache /work/cache15 --out models/cards/img/lung-outlines-ap.png

- ``--low-evidence``: covid-radiography's COVID-19 films that the node reads as (nearly) clear,
  severity extent under :data:`models.training.variants.LOW_EXTENT`, drawn at random, with the
  refined outline and the extent, so that a reader can see what the classifier is asked to
  call COVID-19 there::

    python -m models.training.contact_sheet --cache /work/cache15 --low-evidence \
        --out models/cards/img/covid-radiography-clear-covid19.png

- ``--withheld-normals``: normal films whose outline the quality check rejects (its false
  alarms on the classifier's measure), drawn at random, with the rejected outline and reason::

    python -m models.training.contact_sheet --cache /work/cache15 --withheld-normals \
        --out models/cards/img/withheld-normals.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from models.training.sources import DEFAULT_DATA, index

TILE = 160
NORMAL_SOURCES = ("cxr", "covid-radiography", "nih", "montgomery", "shenzhen")


def _outline(rgb: np.ndarray, lungs: np.ndarray, colour: tuple[int, int, int]) -> None:
    for lung in lungs:
        rim = lung & ~ndimage.binary_erosion(lung, iterations=2)
        rgb[rim] = colour


def tile(img8: np.ndarray, lungs: np.ndarray, colour: tuple[int, int, int], label: str) -> Image.Image:
    rgb = np.repeat(img8[..., None], 3, axis=2).copy()
    _outline(rgb, lungs, colour)
    im = Image.fromarray(rgb).resize((TILE, TILE), Image.Resampling.BILINEAR)
    if label:
        ImageDraw.Draw(im).text((3, 2), label, fill=(255, 255, 0))
    return im


def main(cache: Path, out: Path, data: Path, n_per_source: int = 24, seed: int = 0) -> list[str]:
    from models.training.extract import load, quality_check

    arrays = load(cache, ("hannover", "covid-radiography"), images=True)
    items = {it.file: it for it in index(data)}
    files = [str(f) for f in arrays["files"]]
    rng = np.random.default_rng(seed)
    han = [i for i, f in enumerate(files) if f.startswith("hannover/") and items[f].projection == "ap"]
    cr = [i for i, f in enumerate(files) if f.startswith("covid-radiography/images/covid19/")]
    chosen = sorted(rng.choice(han, n_per_source, replace=False).tolist()) + sorted(
        rng.choice(cr, n_per_source, replace=False).tolist()
    )
    cols = 4  # pairs per row
    rows = -(-len(chosen) // cols)
    sheet = Image.new("RGB", (cols * 2 * TILE + (cols - 1) * 8, rows * TILE), (0, 0, 0))
    listing = []
    for k, i in enumerate(chosen):
        qc = quality_check(arrays, i)
        before = tile(arrays["image"][i], arrays["raw_lungs"][i], (255, 60, 60), f"{k + 1} before")
        after = tile(
            arrays["image"][i],
            arrays["lungs"][i],
            (60, 220, 60) if qc.assessable else (255, 160, 0),
            f"{k + 1} after" + ("" if qc.assessable else ": " + ",".join(qc.reasons)),
        )
        r, c = divmod(k, cols)
        x0 = c * (2 * TILE + 8)
        sheet.paste(before, (x0, r * TILE))
        sheet.paste(after, (x0 + TILE, r * TILE))
        listing.append(f"{k + 1}\t{files[i]}\t{'passed' if qc.assessable else ','.join(qc.reasons)}")
    _save(sheet, out)
    return listing


def _save(sheet: Image.Image, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)  # ~5x smaller


def low_evidence(cache: Path, out: Path, n: int = 24, seed: int = 0) -> list[str]:
    """``n`` random covid-radiography COVID-19 films whose extent, as the shipped severity ridge
    reads it from the cache, is under :data:`~models.training.variants.LOW_EXTENT`."""
    from models.registry import load_ridge
    from models.training.extract import load
    from models.training.variants import LOW_EXTENT

    arrays = load(cache, ("covid-radiography",), images=True)
    extent = load_ridge().predict(arrays["severity_features"])["geographic_extent"]["total"]
    files = [str(f) for f in arrays["files"]]
    covid = [i for i, f in enumerate(files) if f.startswith("covid-radiography/images/covid19/")]
    low = [i for i in covid if extent[i] < LOW_EXTENT]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(low, min(n, len(low)), replace=False).tolist())
    tiles = [
        tile(arrays["image"][i], arrays["lungs"][i], (60, 220, 60), f"{k + 1} extent {extent[i]:.1f}")
        for k, i in enumerate(chosen)
    ]
    _save(_grid(tiles), out)
    return [f"{len(low)} of {len(covid)} COVID-19 films with extent < {LOW_EXTENT}"] + [
        f"{k + 1}\t{files[i]}\t{extent[i]:.2f}" for k, i in enumerate(chosen)
    ]


def _grid(tiles: list[Image.Image], cols: int = 6) -> Image.Image:
    sheet = Image.new("RGB", (cols * TILE, -(-len(tiles) // cols) * TILE), (0, 0, 0))
    for k, im in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet.paste(im, (c * TILE, r * TILE))
    return sheet


def withheld_normals(cache: Path, out: Path, data: Path, n: int = 24, seed: int = 0) -> list[str]:
    """``n`` random normal films (every source with normals) whose refined outline the quality
    check rejects, with that outline and the reason: the check's "false alarms", for a reader to
    judge whether the outline it withheld was right."""
    from models.training.extract import load, quality_check

    arrays = load(cache, NORMAL_SOURCES, images=True)
    items = {it.file: it for it in index(data)}
    files = [str(f) for f in arrays["files"]]
    normals = [i for i, f in enumerate(files) if items[f].label == 0]
    checks = {i: quality_check(arrays, i) for i in normals}
    withheld = [i for i in normals if not checks[i].assessable]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(withheld, min(n, len(withheld)), replace=False).tolist())
    tiles = [
        tile(arrays["image"][i], arrays["lungs"][i], (255, 160, 0), f"{k + 1} " + ",".join(checks[i].reasons))
        for k, i in enumerate(chosen)
    ]
    _save(_grid(tiles), out)
    return [f"{len(withheld)} of {len(normals)} normal films withheld"] + [
        f"{k + 1}\t{files[i]}\t{','.join(checks[i].reasons)}" for k, i in enumerate(chosen)
    ]


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--low-evidence", action="store_true", help="covid-radiography's clear COVID-19 films")
    kind.add_argument("--withheld-normals", action="store_true", help="normal films the check withholds")
    a = p.parse_args()
    if a.low_evidence:
        listing = low_evidence(a.cache, a.out)
    elif a.withheld_normals:
        listing = withheld_normals(a.cache, a.out, a.data)
    else:
        listing = main(a.cache, a.out, a.data)
    print("\n".join(listing))


if __name__ == "__main__":
    cli()
