"""The quality check's ``blurred`` reason: its limits, its false alarms and its catch.

:func:`models.quality.detail` on every cached film (the chained square inside its content box,
as the node checks it). The shipped limits are 0.9 times the least of all the cached films; here
each source is also held out: its films are checked against 0.9 times the least of the *other*
sources' films (false alarms), and so are copies of them blurred (a Gaussian of 0.5-4 % of the
square's size, then the node's resolution chain: caught). ``--unseen``: the shipped limits on the
films of the data release not in the cache (every 4th covid-radiography and every 3rd NIH film are
cached, so the rest of those two were never used to set them).

    python -m models.training.blurred --cache .gpu/cache-norm [--unseen]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from models.evidence import resolution_chain
from models.quality import detail, too_blurred
from models.training.extract import load
from models.training.sources import DEFAULT_DATA, SOURCES

BLURS = (0.5, 1.0, 2.0, 4.0)  # Gaussian sigma, % of the square's size
MARGIN = 0.9  # each limit: this times the least of the films it is set on


def blurred(img8: np.ndarray, percent: float) -> np.ndarray:
    """A chained square blurred by a Gaussian of ``percent`` of its size, then chained again."""
    sigma = percent / 100 * img8.shape[0]
    return resolution_chain(
        ndimage.gaussian_filter(img8.astype(np.float32), sigma).clip(0, 255).astype(np.uint8)
    )


def measures(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 2): :func:`detail` of each square inside its content box (r0, r1, c0, c1)."""
    return np.array([detail(im[r0:r1, c0:c1]) for im, (r0, r1, c0, c1) in zip(images, boxes, strict=True)])


def flagged(m: np.ndarray, limits: np.ndarray) -> np.ndarray:
    return np.asarray((m < limits).any(1))


def held_out(cache: Path, every: int = 4) -> list[dict[str, object]]:
    """Per source: films, false alarms against the limits set without it, and the share of its
    blurred copies (every ``every``-th film, each blur of :data:`BLURS`) caught."""
    films = {s: load(cache, (s,), images=True) for s in SOURCES}
    m = {s: measures(d["image"], d["box"]) for s, d in films.items()}
    rows = []
    for s, d in films.items():
        limits = MARGIN * np.nanmin(np.concatenate([m[o] for o in SOURCES if o != s]), 0)
        idx = np.arange(0, len(d["image"]), every)
        caught = {
            p: float(
                flagged(
                    measures(np.stack([blurred(d["image"][i], p) for i in idx]), d["box"][idx]), limits
                ).mean()
            )
            for p in BLURS
        }
        rows.append(
            {
                "source": s,
                "films": len(m[s]),
                "false_alarms": int(flagged(m[s], limits).sum()),
                "caught": caught,
            }
        )
    least = np.nanmin(np.concatenate(list(m.values())), 0)
    rows.append({"source": "all (the shipped limits)", "limits": (MARGIN * least).round(3).tolist()})
    return rows


def unseen(cache: Path, data: Path) -> dict[str, object]:
    """The shipped limits on every film of the data release that is not in ``cache``."""
    from models.training.extract import not_cached, prepare

    items = not_cached(cache, data)
    hits = {}
    for it in items:
        img8, (r0, r1, c0, c1) = prepare(data, it)
        fine, mid = detail(img8[r0:r1, c0:c1])
        if too_blurred(fine, mid):
            hits[it.file] = [round(fine, 4), round(mid, 4)]
    return {"films": len(items), "flagged": hits}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, required=True, help="the cache of models.training.extract")
    p.add_argument("--unseen", action="store_true", help="the shipped limits on the films not in the cache")
    a = p.parse_args()
    if a.unseen:
        print(unseen(a.cache, DEFAULT_DATA))
        return
    rows = held_out(a.cache)
    print(
        "| held-out source | films | false alarms | " + " | ".join(f"blur {b} % caught" for b in BLURS) + " |"
    )
    print("|---|---|---|" + "---|" * len(BLURS))
    for r in rows[:-1]:
        caught = " | ".join(f"{100 * r['caught'][b]:.1f} %" for b in BLURS)  # type: ignore[index]
        print(f"| {r['source']} | {r['films']} | {r['false_alarms']} | {caught} |")
    print(f"shipped limits (fine, mid): {rows[-1]['limits']}")


if __name__ == "__main__":
    main()
