"""Where the heatmap's heat lies: inside the predicted lungs or not.

On images of the three sources LungNet never saw (hannover, covid-cxnet, covid-radiography),
``n`` per source at random: the share of the heat inside the predicted (refined) lungs and
whether the peak is inside, for the explanation of LungNet's lung-restricted opacity evidence
before it is kept to the lungs (what the network looks at) and as shipped (kept to the lungs).

    python -m models.training.heat --cache /work/cache15 --n 40
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.preprocessing import network_input

UNSEEN = ("hannover", "covid-cxnet", "covid-radiography")


def main(
    cache: Path,
    n: int = 40,
    method: str = "gradcam",
    seed: int = 0,
    weights_dir: Path | None = None,
    registry: Path | None = None,
) -> dict[str, Any]:
    import torch

    from models.explain import LungEvidence, explain, explain_lungs
    from models.registry import build_model, load_registry
    from models.training.extract import load

    torch.set_num_threads(2)
    net = build_model("segmentation", "cpu", weights_dir, load_registry(registry))
    arrays = load(cache, UNSEEN, images=True)
    rng = np.random.default_rng(seed)
    src = np.array([str(f).split("/")[0] for f in arrays["files"]])
    out: dict[str, Any] = {"method": method, "per_source": {}}
    raw_in: list[float] = []
    raw_peak: list[bool] = []
    ship_in: list[float] = []
    ship_peak: list[bool] = []
    for s in UNSEEN:
        idx = rng.choice(np.nonzero(src == s)[0], min(n, int((src == s).sum())), replace=False)
        r_in: list[float] = []
        r_pk: list[bool] = []
        for i in idx:
            lungs = arrays["lungs"][i]
            union = lungs.any(0)
            if not union.any():
                continue
            x = network_input(arrays["image"][i][None])
            mask = torch.from_numpy(union.astype(np.float32))[None]
            raw = explain(LungEvidence(net, mask).eval(), x, 0, method)
            shipped = explain_lungs(net, x, lungs, method)
            for heat, ins, pk in ((raw, r_in, r_pk), (shipped, ship_in, ship_peak)):
                ins.append(float(heat[union].sum() / max(heat.sum(), 1e-9)))
                pk.append(bool(union.flat[int(np.argmax(heat))]))
            raw_in.append(r_in[-1])
            raw_peak.append(r_pk[-1])
        out["per_source"][s] = {
            "n": len(r_in),
            "heat_in_lungs_before_mask": round(float(np.mean(r_in)), 4),
            "peak_in_lungs_before_mask": round(float(np.mean(r_pk)), 4),
        }
    out["before_mask"] = {
        "heat_in_lungs": round(float(np.mean(raw_in)), 4),
        "peak_in_lungs": round(float(np.mean(raw_peak)), 4),
    }
    out["shipped"] = {
        "heat_in_lungs": round(float(np.mean(ship_in)), 4),
        "peak_in_lungs": round(float(np.mean(ship_peak)), 4),
        "note": "kept to the lungs by construction",
    }
    return out


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--method", default="gradcam")
    a = p.parse_args()
    print(json.dumps(main(a.cache, a.n, a.method), indent=1))


if __name__ == "__main__":
    cli()
