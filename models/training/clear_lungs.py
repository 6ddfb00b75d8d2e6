"""How often the severity ridge's two scores disagree on whether a lung is clear, on the cached films.

:meth:`models.severity.LungRidge.predict` clips each lung's two scores apart, so a lung can read
extent 0 with opacity 0.4; :meth:`~models.severity.LungRidge.report`, what the node reports, makes a
lung clear by either score (under :data:`models.severity.CLEAR_BELOW`, 0.0 as the report shows it)
clear by both. Per source, with the released ridge: the lungs that rule changes, by which score
read clear, and the largest score it set to 0. ``--ship`` records the
table in the registry's severity entry (its card prints it).

    python -m models.training.clear_lungs --cache .gpu/cache-norm [--ship]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from models.training.extract import load
from models.training.sources import SOURCES

COMMAND = "python -m models.training.clear_lungs --cache CACHE --ship"


def disagreements(
    cache: Path,
    sources: tuple[str, ...] = SOURCES,
    weights_dir: Path | None = None,
    registry: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Per source: lungs, lungs clear by extent and not by opacity, clear by opacity and not by
    extent, and the largest score :meth:`~models.severity.LungRidge.report` set to 0."""
    from models.registry import load_registry, load_ridge
    from models.severity import CLEAR_BELOW

    ridge = load_ridge(weights_dir, load_registry(registry))
    out = {}
    for source in sources:
        pred = ridge.predict(load(cache, (source,))["severity_features"])
        ext = np.stack([pred["geographic_extent"][s] for s in ("right", "left")])
        opa = np.stack([pred["opacity"][s] for s in ("right", "left")])
        only_extent = (ext < CLEAR_BELOW) & (opa >= CLEAR_BELOW)
        only_opacity = (opa < CLEAR_BELOW) & (ext >= CLEAR_BELOW)
        out[source] = {
            "lungs": int(ext.size),
            "extent_0_opacity_above": int(only_extent.sum()),
            "opacity_0_extent_above": int(only_opacity.sum()),
            "largest_opacity_zeroed": round(float(opa[only_extent].max(initial=0.0)), 2),
            "largest_extent_zeroed": round(float(ext[only_opacity].max(initial=0.0)), 2),
        }
    return out


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| source | lungs | extent 0.0, opacity not | opacity 0.0, extent not "
        "| largest opacity / extent set to 0 |",
        "|---|---|---|---|---|",
    ]
    for source, r in rows.items():
        n = r["lungs"]
        lines.append(
            f"| {source} | {n} | {100 * r['extent_0_opacity_above'] / n:.1f} % | "
            f"{100 * r['opacity_0_extent_above'] / n:.1f} % | "
            f"{r['largest_opacity_zeroed']:.2f} / {r['largest_extent_zeroed']:.2f} |"
        )
    return "\n".join(lines)


def ship(rows: dict[str, dict[str, Any]], registry: Path | None = None) -> None:
    """The table into the registry's severity entry (``metrics.clear_lungs``)."""
    from models.registry import load_registry, update_registry

    entry = load_registry(registry)["models"]["severity"]
    entry["metrics"]["clear_lungs"] = {"command": COMMAND, "by_source": rows}
    update_registry({"severity": entry}, registry)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the cache of models.training.extract")
    p.add_argument("--ship", action="store_true", help="record the table in the registry")
    a = p.parse_args()
    rows = disagreements(a.cache)
    print(table(rows))
    if a.ship:
        ship(rows)


if __name__ == "__main__":
    main()
