"""Contact sheet of lung outlines on portable/ICU films, before (LungNet's raw outline) and after
(the refined outline the node reports, green when the quality check passes, orange with its
reason when it does not).

    python -m models.training.contact_sheet --cache /work/cache15 --out models/cards/img/lung-outlines-ap.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from models.training.sources import DEFAULT_DATA, index

TILE = 160


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
    from models.quality import check
    from models.training.extract import load

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
        box = tuple(int(v) for v in arrays["box"][i])
        qc = check(arrays["image"][i], arrays["lungs"][i], box)  # type: ignore[arg-type]
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
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)  # ~5x smaller
    return listing


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a = p.parse_args()
    print("\n".join(main(a.cache, a.out, a.data)))


if __name__ == "__main__":
    cli()
