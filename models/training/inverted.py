"""How often the quality check's ``inverted`` reason fires on the cached films and on their negatives.

Per source: the films of the cache as the node checks them (:func:`models.training.extract.quality_check`,
false alarms) and each film's negative (255 minus its chained square, caught). The reason is
decided on the grey alone, before the outline is read, so a negative keeps its film's cached lungs.

    python -m models.training.inverted --cache .gpu/cache-norm
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.training.extract import load, quality_check
from models.training.sources import SOURCES


def rates(cache: Path, sources: tuple[str, ...] = SOURCES) -> list[tuple[str, int, int, int]]:
    """(source, films, films flagged ``inverted``, negatives flagged ``inverted``) per source."""
    rows = []
    for source in sources:
        arrays = load(cache, (source,), images=True)
        negatives = {**arrays, "image": 255 - arrays["image"]}
        n = len(arrays["image"])
        flagged = sum("inverted" in quality_check(arrays, i).reasons for i in range(n))
        caught = sum("inverted" in quality_check(negatives, i).reasons for i in range(n))
        rows.append((source, n, flagged, caught))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the cache of models.training.extract")
    p.add_argument("--sources", nargs="*", default=list(SOURCES))
    a = p.parse_args()
    rows = rates(a.cache, tuple(a.sources))
    print("| source | films | false alarms | negatives caught |")
    print("|---|---|---|---|")
    for source, n, flagged, caught in [*rows, ("all", *np.sum([r[1:] for r in rows], axis=0))]:
        print(f"| {source} | {n} | {_share(flagged, n)} | {_share(caught, n)} |")


def _share(k: int, n: int) -> str:
    return f"{k} ({100 * k / n:.2f} %)"


if __name__ == "__main__":
    main()
