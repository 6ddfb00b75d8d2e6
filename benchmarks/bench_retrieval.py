"""Similar-case retrieval: quality on our data and query time at scale.

    python benchmarks/bench_retrieval.py                   # quality as registered, query times
    python benchmarks/bench_retrieval.py --cache corpus256.npz   # recompute quality (CPU, ~2 min)

Quality (held-out patients, the query patient's own images never counted):
precision@5 of the class, the rate at which neighbours come from the same
*source* (the shortcut), precision@5 when only other sources may answer, and
Keidar et al.'s k-NN vote for COVID-19; each beside what random neighbours give.

Scale: the node's index (:class:`node.archive.EmbeddingIndex`, exact FAISS
inner product, the patient's own images excluded by an ID selector) over
10,000 and 100,000 synthetic unit vectors of the embedding's dimension, with
an HNSW index beside it for comparison; median and p95 of 200 queries.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import numpy as np


def quality(cache: Path | None) -> dict:
    from models.registry import entry, verified_path
    from models.retrieval import Projection
    from models.training.retrieval import evaluate, pooled_features

    if cache is None:
        return entry("retrieval")["metrics"]
    return evaluate(pooled_features(cache), Projection.load(verified_path("retrieval")))


def _timings(search, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3), float(np.percentile(times, 95) * 1e3)


def scale(sizes: tuple[int, ...], dim: int, k: int = 5) -> list[tuple[str, int, float, float, float]]:
    import faiss

    from node.archive import EmbeddingIndex

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = vectors[rng.choice(n, 200, replace=False)] + 0.05 * rng.standard_normal((200, dim)).astype(
            np.float32
        )
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        t = time.perf_counter()
        index = EmbeddingIndex("bench", dim)
        index.add(np.arange(1, n + 1), vectors)
        build = time.perf_counter() - t
        exclude = [1, 2, 3, 4, 5]
        rows.append(
            ("exact (node)", n, build, *_timings(partial(index.search, k=k, exclude=exclude), queries))
        )
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.add(vectors)
        build = time.perf_counter() - t
        rows.append(("HNSW M=32", n, build, *_timings(lambda q, h=hnsw: h.search(q[None], k), queries)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, help="models.training.corpus cache: recompute the quality")
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()

    from models.registry import entry

    q = quality(args.cache)
    print(f"Retrieval quality ({q['protocol']})")
    print(
        f"{'embedding':<24}{'P@5 class':>11}{'chance':>8}{'same source':>13}{'chance':>8}"
        f"{'P@5 other src':>15}{'chance':>8}{'kNN COVID acc/sens/spec':>26}"
    )
    for name in ("shipped", "raw_cosine"):
        m = q[name]
        vote = m["knn_covid19_vote"]
        print(
            f"{name:<24}{m['precision_at_k']:>11.3f}{m['precision_at_k_chance']:>8.3f}"
            f"{m['same_source_rate']:>13.3f}{m['same_source_rate_chance']:>8.3f}"
            f"{m['cross_source_precision_at_k']:>15.3f}{m['cross_source_precision_at_k_chance']:>8.3f}"
            f"{vote['accuracy']:>10.3f} / {vote['sensitivity']:.3f} / {vote['specificity']:.3f}"
        )
    print(
        "per class P@5 (shipped): "
        + ", ".join(
            f"{c} {v['precision_at_k']:.3f} (n {v['n']})" for c, v in q["shipped"]["per_class"].items()
        )
    )
    print(
        "Keidar et al. 2021 (4-NN vote, their test set): "
        "accuracy 0.870, sensitivity 0.832, specificity 0.912\n"
    )

    dim = int(entry("retrieval")["arch"]["dim"])
    print(f"Query time, {dim}-d unit vectors, k 5, one query at a time (this machine's CPU)")
    print(f"{'index':<16}{'vectors':>10}{'build s':>10}{'p50 ms':>10}{'p95 ms':>10}")
    for name, n, build, p50, p95 in scale(tuple(int(s) for s in args.sizes.split(",")), dim):
        print(f"{name:<16}{n:>10,}{build:>10.2f}{p50:>10.3f}{p95:>10.3f}")


if __name__ == "__main__":
    main()
