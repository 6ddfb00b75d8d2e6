"""Lung Dice of the node's outline on cxr-collection patients LungNet never saw (its hold-out:
severity-scored patients + the md5-hashed 15 %), before and after :func:`models.quality.refine_lungs`,
both after the 224-px resolution chain; reference: the radiologists' or V7 masks (whole lung
field, the style of the node's outline). Montgomery/Shenzhen masks are NLM-style (lung behind
the heart left out) and are not compared with the V7-style outline here.

    python -m models.training.outline_dice --cache /work/cache15
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.preprocessing import load_image, preprocess
from models.training.corpus import STYLE_NONE, STYLE_RADIOLOGIST, build_index, read_mask, split_lungs
from models.training.evaluation import dice
from models.training.fit import in_holdout
from models.training.sources import DEFAULT_DATA


def main(cache: Path, data: Path) -> dict[str, Any]:
    from models.training.extract import load

    arrays = load(cache, ("cxr",))
    where = {str(f): i for i, f in enumerate(arrays["files"])}
    recs = [r for r in build_index(data) if r.source == "cxr" and r.style != STYLE_NONE]
    scored = {r.patient for r in recs if not np.isnan(r.extent)}
    held = [r for r in recs if r.patient in scored or in_holdout(np.array([r.patient]))[0]]
    before: list[float] = []
    after: list[float] = []
    for r in held:
        i = where[r.file]
        pix = load_image(Path(data) / r.file).pixels
        _, geom = preprocess(pix, 256)
        if r.style == STYLE_RADIOLOGIST:
            right, left = read_mask(Path(data) / r.masks[0]), read_mask(Path(data) / r.masks[1])
        else:
            right, left = split_lungs(read_mask(Path(data) / r.masks[0]))
        ref = geom.to_square(right | left, nearest=True) > 0.5
        before.append(dice(arrays["raw_lungs"][i].any(0), ref))
        after.append(dice(arrays["lungs"][i].any(0), ref))

    def summary(v: list[float]) -> dict[str, float]:
        return {"mean": round(float(np.mean(v)), 4), "median": round(float(np.median(v)), 4)}

    return {"n": len(held), "dice_raw": summary(before), "dice_refined": summary(after)}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a = p.parse_args()
    print(json.dumps(main(a.cache, a.data), indent=1))


if __name__ == "__main__":
    cli()
