"""False alarms of the turned-film test (:func:`models.quality.lung_confidence`) on normal films,
and its catch on the same films turned 90 degrees; ``n`` normal films per source at random.

    python -m models.training.orientation --cache /work/cache15 --n 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.preprocessing import network_input
from models.training.sources import DEFAULT_DATA, index

NORMAL_SOURCES = ("covid-radiography", "nih", "montgomery", "shenzhen")


def main(cache: Path, data: Path, n: int = 40, seed: int = 0) -> dict[str, Any]:
    import torch

    from models.networks import V7_LEFT, V7_RIGHT
    from models.quality import CONFIDENT, TURNED_MARGIN, lung_confidence
    from models.registry import build_model
    from models.segmentation import lungnet_outputs
    from models.training.extract import load

    def flags(given: float, turned: float) -> bool:  # as models.quality.check decides
        return given < CONFIDENT and turned >= CONFIDENT and turned > given + TURNED_MARGIN

    torch.set_num_threads(2)
    net = build_model("segmentation", "cpu")
    items = {it.file: it for it in index(data)}
    arrays = load(cache, NORMAL_SOURCES, images=True)
    files = [str(f) for f in arrays["files"]]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_per_source": n}
    alarms, caught, total = 0, 0, 0
    for s in NORMAL_SOURCES:
        normals = [i for i, f in enumerate(files) if items[f].source == s and items[f].label == 0]
        chosen = rng.choice(normals, min(n, len(normals)), replace=False)
        a = c = 0
        for i in chosen:
            views = np.stack([np.rot90(arrays["image"][i], k).copy() for k in (0, 1, 2, 3)])
            maps = lungnet_outputs(net, network_input(views))["maps"]
            conf = [lung_confidence(m[[V7_RIGHT, V7_LEFT]]) for m in maps]
            # as given: turned readings are 1 and 3; the film turned by 1: its turned readings 0 and 2
            a += flags(conf[0], max(conf[1], conf[3]))
            c += flags(conf[1], max(conf[0], conf[2]))
        out[s] = {
            "n": len(chosen),
            "false_alarm": round(a / len(chosen), 4),
            "turned_caught": round(c / len(chosen), 4),
        }
        alarms, caught, total = alarms + a, caught + c, total + len(chosen)
    out["all"] = {
        "n": total,
        "false_alarm": round(alarms / total, 4),
        "turned_caught": round(caught / total, 4),
    }
    return out


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=int, default=40)
    a = p.parse_args()
    print(json.dumps(main(a.cache, a.data, a.n), indent=1))


if __name__ == "__main__":
    cli()
