"""False alarms of the turned-film test (:func:`models.quality.lung_confidence`) on normal films,
and its catch on the same films turned 90 degrees and upside down (turned 180); ``n`` normal films
per source at random. The test alone: the check's other reasons catch some more of those films.
``--record`` writes the result into the classification entry's ``metrics.orientation_test``.

    python -m models.training.orientation --cache /work/cache15 --n 40 [--record]
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
    from models.quality import CONFIDENT, TURNED_MARGIN, TURNS, lung_confidence
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
    totals = {"false_alarm": 0, "turned_caught": 0, "upside_down_caught": 0}
    total = 0
    for s in NORMAL_SOURCES:
        normals = [i for i, f in enumerate(files) if items[f].source == s and items[f].label == 0]
        chosen = rng.choice(normals, min(n, len(normals)), replace=False)
        counts = dict.fromkeys(totals, 0)
        for i in chosen:
            views = np.stack([np.rot90(arrays["image"][i], k).copy() for k in (0, 1, 2, 3)])
            maps = lungnet_outputs(net, network_input(views))["maps"]
            conf = [lung_confidence(m[[V7_RIGHT, V7_LEFT]]) for m in maps]
            # the film turned by g quarter turns: its readings turned by TURNS are views g + t
            for key, g in (("false_alarm", 0), ("turned_caught", 1), ("upside_down_caught", 2)):
                counts[key] += flags(conf[g], max(conf[(g + t) % 4] for t in TURNS))
        out[s] = {"n": len(chosen), **{k: round(v / len(chosen), 4) for k, v in counts.items()}}
        totals = {k: totals[k] + counts[k] for k in totals}
        total += len(chosen)
    out["all"] = {"n": total, **{k: round(v / total, 4) for k, v in totals.items()}}
    out["protocol"] = f"{n} normal films per source ({', '.join(NORMAL_SOURCES)}), seed {seed}"
    out["note"] = "the test alone; the check's other reasons catch some more turned films"
    return out


def record(result: dict[str, Any], registry: Path | None = None) -> None:
    """Write :func:`main`'s result into the classification entry's ``metrics.orientation_test``."""
    from models.registry import entry, load_registry, update_registry

    classification = entry("classification", load_registry(registry))
    classification["metrics"]["orientation_test"] = result
    update_registry({"classification": classification}, registry)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--record", action="store_true", help="write the result into the registry")
    a = p.parse_args()
    result = main(a.cache, a.data, a.n)
    print(json.dumps(result, indent=1))
    if a.record:
        record(result)


if __name__ == "__main__":
    cli()
