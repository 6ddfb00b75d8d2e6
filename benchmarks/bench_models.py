"""CPU time per image for each model and for the whole analysis.

Usage: ``python benchmarks/bench_models.py [--repeat N] [--threads T] [IMAGE ...]``
(default images: the committed held-out slice and the pydicom-data CR chest).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("images", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heatmap", default="gradcam")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from models.inference import Analyzer
    from models.preprocessing import load_image

    images = args.images or sorted((REPO / "tests" / "data" / "models").glob("*.jpg"))[:4]
    if not args.images:
        try:
            from pydicom.data import get_testdata_file

            dcm = get_testdata_file("RG1_J2KI.dcm")
            if dcm:
                images.append(Path(dcm))
        except ImportError:
            pass
    analyzer = Analyzer(device="cpu")
    t = time.perf_counter()
    analyzer.load_all()
    load_s = time.perf_counter() - t
    rows: dict[str, list[float]] = {}
    for path in images:
        t = time.perf_counter()
        loaded = load_image(path)
        rows.setdefault("load_image", []).append(time.perf_counter() - t)
        analyzer.analyze(loaded, heatmap=args.heatmap)  # warm-up
        for _ in range(args.repeat):
            t = time.perf_counter()
            res = analyzer.analyze(loaded, heatmap=args.heatmap)
            rows.setdefault("analyze (total)", []).append(time.perf_counter() - t)
            for k, v in res.extra["timings_s"].items():
                rows.setdefault(k, []).append(v)
    print(
        f"device: cpu, torch threads: {args.threads}, images: {len(images)}, repeats: {args.repeat}, "
        f"heatmap: {args.heatmap}, model loading (once): {load_s:.2f} s"
    )
    print(f"{'step':<18}{'median ms':>12}{'mean ms':>12}{'max ms':>12}")
    order = [
        "load_image",
        "preprocess",
        "segmentation",
        "classification",
        "severity",
        "heatmap",
        "analyze (total)",
    ]
    for k in order:
        if k in rows:
            v = [x * 1000 for x in rows[k]]
            print(f"{k:<18}{statistics.median(v):>12.1f}{statistics.mean(v):>12.1f}{max(v):>12.1f}")


if __name__ == "__main__":
    main()
