"""Regenerate the held-out test slice: ``python tests/data/models/make_slice.py [DATA]``.

Takes 8 images of patients that the lung segmenter never saw
(``models.training.fit.segmentation_holdout``: severity-scored patients + a hashed 15 %
of the rest), 4 with radiologists' right/left masks and 4 with V7 masks, from
different patients, resized to at most 256 px (JPEG q90 / PNG masks).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from models.training.corpus import STYLE_RADIOLOGIST, STYLE_V7, cached, split_lungs  # noqa: E402
from models.training.fit import segmentation_holdout  # noqa: E402


def main(data: Path) -> None:
    arrays = cached(data)
    held = segmentation_holdout(arrays)
    rows = []
    seen: set[str] = set()
    for src, want in ((STYLE_RADIOLOGIST, 4), (STYLE_V7, 4)):
        for i in np.nonzero(held & (arrays["style"] == src))[0]:
            if sum(r[2] == src for r in rows) >= want:
                break
            if arrays["patient"][i] in seen:
                continue
            seen.add(str(arrays["patient"][i]))
            rows.append((str(arrays["files"][i]), str(arrays["patient"][i]), int(src)))
    out_rows = []
    for rel, patient, src in rows:
        stem = Path(rel).stem
        img = Image.open(data / rel).convert("L")
        root = data / "cxr-collection"
        if src == STYLE_RADIOLOGIST:
            r = np.asarray(Image.open(root / "segmentations/right-lung" / f"{stem}.png")) == 255
            l_ = np.asarray(Image.open(root / "segmentations/left-lung" / f"{stem}.png")) == 255
        else:
            r, l_ = split_lungs(
                np.asarray(Image.open(root / "lung-masks" / f"{stem}.png").convert("L")) == 255
            )
        scale = 256 / max(img.size)
        size = (max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale)))
        img.resize(size, Image.Resampling.LANCZOS).save(HERE / f"{stem}.jpg", quality=90)
        for name, m in (("right", r), ("left", l_)):
            Image.fromarray((m * 255).astype(np.uint8)).resize(size, Image.Resampling.NEAREST).save(
                HERE / f"{stem}.{name}.png", optimize=True
            )
        out_rows.append(
            {
                "image": f"{stem}.jpg",
                "right": f"{stem}.right.png",
                "left": f"{stem}.left.png",
                "patient": patient,
                "mask_source": "radiologists" if src == STYLE_RADIOLOGIST else "v7-split",
            }
        )
    with (HERE / "index.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(out_rows[0]))
        w.writeheader()
        w.writerows(out_rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "data")
