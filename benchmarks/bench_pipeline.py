"""End-to-end latency and throughput: C-STORE to the node until the SR is in Orthanc.

Real processes on this machine (CPU only): Orthanc, `cxr-node serve`, dcmtk's
storescu; the embedded broker and worker, or Redis with 1 or 2 `cxr-node
worker` processes. Prints a table.

    python benchmarks/bench_pipeline.py [--studies 20] [--redis redis://127.0.0.1:6379/15]

Latency: studies sent one at a time, each timed from the start of storescu to
the moment its SR is listed in Orthanc (polled every 0.1 s), p50 and p95.
Throughput: all studies sent at once, studies per hour until the last SR.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def run_setup(name: str, workers: int, broker: str | None, studies: int) -> dict[str, float]:
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
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=600, interval=0.1)
                latencies.append(time.perf_counter() - started)
            batch = make_studies(root / "throughput", studies)
            started = time.perf_counter()
            assert storescu(node.port, *[p for p, _ in batch]).returncode == 0
            for _, study in batch:
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=1800, interval=0.2)
            elapsed = time.perf_counter() - started
        finally:
            node.stop()
            orthanc.stop()
    q = statistics.quantiles(latencies, n=20)
    return {
        "p50": statistics.median(latencies),
        "p95": q[18],
        "per_hour": studies / elapsed * 3600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    setups = [
        ("embedded, 1 worker process", 1, None),
        ("Redis, 1 worker process", 1, args.redis),
        ("Redis, 2 worker processes", 2, args.redis),
    ]
    print(f"# end-to-end: C-STORE of a 7.2 MB CR chest -> SR in Orthanc; {args.studies} studies; CPU only")
    print(f"{'setup':<28} | {'p50 s':>6} | {'p95 s':>6} | {'studies/hour':>12}")
    print(f"{'-' * 28}-|-{'-' * 6}-|-{'-' * 6}-|-{'-' * 12}")
    for name, workers, broker in setups:
        r = run_setup(name, workers, broker, args.studies)
        print(f"{name:<28} | {r['p50']:>6.2f} | {r['p95']:>6.2f} | {r['per_hour']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
