"""End-to-end latency and throughput: C-STORE to the node until the SR is in Orthanc.

Real processes on this machine (CPU only): Orthanc, `cxr-node serve`, dcmtk's
storescu; the embedded broker and worker, or Redis with 1 or 2 `cxr-node
worker` processes. Prints a table.

    python benchmarks/bench_pipeline.py [--studies 20] [--redis redis://127.0.0.1:6379/15]

Latency: studies sent one at a time, each timed from the start of storescu to
the moment its SR is listed in Orthanc (polled every 0.05 s), p50 and p95.
Throughput: all studies sent at once, studies per hour until the last SR.
Per stage: the worker logs each study's stages (``workers.pipeline.STAGES``);
the rest of the end-to-end latency (C-STORE, ingest, broker, Orthanc's own
storing) is "outside the worker".
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread  # noqa: E402

from tests.e2e import NodeProcess, result_counts  # noqa: E402
from tests.helpers import pydicom_data_file, storescu, wait_until, with_new_uids, write  # noqa: E402
from tests.orthanc import Orthanc  # noqa: E402


def make_studies(folder: Path, count: int) -> list[tuple[Path, str]]:
    template = dcmread(pydicom_data_file("RG1_UNCR.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        ds = with_new_uids(template)
        out.append((write(ds, folder / f"chest{i}.dcm"), str(ds.StudyInstanceUID)))
    return out


def sr_arrived(orthanc: Orthanc, study: str) -> bool:
    return result_counts(orthanc, study)[0] >= 1


_DONE = re.compile(r"SOP instance \S+ done in ([\d.]+) s \((.*)\)")


def worker_stages(log: Path, skip: int) -> list[dict[str, float]]:
    """Seconds per stage of every study the workers logged, after the first ``skip``."""
    found = []
    for match in _DONE.finditer(log.read_text(errors="replace")):
        stages = {}
        for part in match.group(2).split(", "):
            name, ms, _ = part.split(" ")
            stages[name] = float(ms) / 1000
        found.append(stages)
    return found[skip:]


def run_setup(name: str, workers: int, broker: str | None, studies: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        orthanc = Orthanc(root / "orthanc").start()
        env = {"CXR_NODE_BROKER_URL": broker} if broker else {}
        env["CXR_NODE_WORKER_CONCURRENCY"] = str(workers)
        node = NodeProcess(root, orthanc, **env)
        try:
            if broker:
                node.start("--no-worker")
                for _ in range(workers):
                    node.spawn("worker", "--concurrency", "1")
            else:
                node.start()
            # Warm-up: the first analysis loads the models in each worker process.
            for path, study in make_studies(root / "warm", workers):
                storescu(node.port, path)
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=600, interval=0.1)
            latencies = []
            for path, study in make_studies(root / "latency", studies):
                started = time.perf_counter()
                assert storescu(node.port, path).returncode == 0
                # Every 0.05 s: 25 ms of measurement delay on average, against an 0.8 s goal.
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=600, interval=0.05)
                latencies.append(time.perf_counter() - started)
            batch = make_studies(root / "throughput", studies)
            started = time.perf_counter()
            assert storescu(node.port, *[p for p, _ in batch]).returncode == 0
            for _, study in batch:
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=1800, interval=0.2)
            elapsed = time.perf_counter() - started
            stages = worker_stages(node.log, skip=workers)
        finally:
            node.stop()
            orthanc.stop()
    q = statistics.quantiles(latencies, n=20)
    return {
        "p50": statistics.median(latencies),
        "p95": q[18],
        "per_hour": studies / elapsed * 3600,
        "stages": stages,
        "latencies": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--setups", default="embedded,redis1,redis2", help="which of embedded,embedded2,redis1,redis2,redis4"
    )
    args = parser.parse_args()
    known = {
        "embedded": ("embedded, 1 worker process", 1, None),
        "embedded2": ("embedded, 2 worker processes", 2, None),
        "redis1": ("Redis, 1 worker process", 1, args.redis),
        "redis2": ("Redis, 2 worker processes", 2, args.redis),
        "redis4": ("Redis, 4 worker processes", 4, args.redis),
    }
    setups = [known[k] for k in args.setups.split(",")]
    breakdown = []
    print(f"# end-to-end: C-STORE of a 7.2 MB CR chest -> SR in Orthanc; {args.studies} studies; CPU only")
    print(f"{'setup':<28} | {'p50 s':>6} | {'p95 s':>6} | {'studies/hour':>12}")
    print(f"{'-' * 28}-|-{'-' * 6}-|-{'-' * 6}-|-{'-' * 12}")
    for name, workers, broker in setups:
        r = run_setup(name, workers, broker, args.studies)
        print(f"{name:<28} | {r['p50']:>6.2f} | {r['p95']:>6.2f} | {r['per_hour']:>12.0f}", flush=True)
        breakdown.append((name, r))
    from workers.pipeline import STAGES

    print("\n# per stage, median ms per study (latency runs and throughput runs together)")
    print(f"{'setup':<28} | " + " | ".join(f"{s:>8}" for s in (*STAGES, "outside")))
    print(f"{'-' * 28}-|-" + "-|-".join("-" * 8 for _ in (*STAGES, "outside")))
    for name, r in breakdown:
        stages = r["stages"]
        if not stages:  # a node from before the worker logged its stages
            print(f"{name:<28} | (no stage lines in the worker's log)")
            continue
        cells = [
            statistics.median([st.get(k, 0.0) for st in stages]) * 1000 if stages else 0.0 for k in STAGES
        ]
        # Of a latency run: the end-to-end time the worker did not account for.
        inside = [sum(st.values()) for st in stages[: len(r["latencies"])]]
        outside = statistics.median(r["latencies"]) - statistics.median(inside) if inside else 0.0
        print(f"{name:<28} | " + " | ".join(f"{c:>8.0f}" for c in (*cells, outside * 1000)))


if __name__ == "__main__":
    main()
