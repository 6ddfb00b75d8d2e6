"""End-to-end latency and throughput: C-STORE to the node until the SR is in Orthanc.

Real processes on this machine (CPU only): Orthanc, `cxr-node serve`, dcmtk's
storescu; the embedded broker and worker, or Redis with 1 or 2 `cxr-node
worker` processes. Prints a table.

    python benchmarks/bench_pipeline.py [--studies 20] [--size cr|full] [--redis redis://127.0.0.1:6379/15]

Inputs: ``--size cr`` the 7.2 MB pydicom-data CR chest (1955 x 1841);
``--size full`` a full-size portable DX, 2800 rows x 2304 columns, 12 bits
stored, MONOCHROME2, about 13 MB, made from a normal PA chest of the shared
data (nih-sample 00000129_000, 1024 px JPEG) upscaled, with a little noise so
that all 12 bits are used.

The node is started, and the benchmark waits until its worker is ready (Celery's
"ready" line and, where the node reports it, every worker child holding its
models); no warm-up study is sent, so the first study on each worker child is
among those timed ("max").

Latency: studies sent one at a time, each timed from the start of storescu to
the moment its SR is listed in Orthanc (polled every 0.05 s), p50 and p95.
Throughput: all studies sent at once, studies per hour until the last SR.
Per stage: the worker logs each study's stages (``workers.pipeline.STAGES``),
printed as median ms per study, one row per stage; the rest of the
end-to-end latency (C-STORE, ingest, broker, Orthanc's own storing) is
"outside the worker".
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

import numpy as np  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from tests.e2e import NodeProcess, result_counts  # noqa: E402
from tests.helpers import (  # noqa: E402
    _dx,
    free_port,
    pydicom_data_file,
    storescu,
    wait_until,
    with_new_uids,
    write,
)
from tests.orthanc import Orthanc  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FULL_PICTURE = "nih-sample/images/00000129_000.jpg"  # No Finding, PA, 1024 x 1024
FULL_ROWS, FULL_COLUMNS = 2800, 2304
FULL_SPACING_MM = 0.15  # a 42 x 35 cm detector


def full_size_dx(picture: Path = SHARED_DATA / FULL_PICTURE) -> Dataset:
    """A portable-detector-sized DX (2800 x 2304, 12 bits, MONOCHROME2) from a shared chest picture."""
    from PIL import Image

    grey = Image.open(picture).convert("F")
    side = max(FULL_ROWS, FULL_COLUMNS)
    big = np.asarray(grey.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    left = (side - FULL_COLUMNS) // 2
    big = big[:FULL_ROWS, left : left + FULL_COLUMNS]
    noise = np.random.default_rng(0).normal(0.0, 4.0, big.shape).astype(np.float32)
    pixels = np.clip(np.rint(big * 16.0 + noise), 0, 4095).astype(np.uint16)
    ds = _dx(pixels, view="PA", age="066Y")
    ds.ImagerPixelSpacing = [FULL_SPACING_MM, FULL_SPACING_MM]
    return ds


def make_studies(folder: Path, count: int, template: Dataset | None = None) -> list[tuple[Path, str]]:
    template = template if template is not None else dcmread(pydicom_data_file("RG1_UNCR.dcm"))
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
            name, ms, _ = part.rsplit(" ", 2)
            stages[name] = float(ms) / 1000
        found.append(stages)
    return found[skip:]


def workers_ready(node: NodeProcess, offset: int, workers: int) -> bool:
    """Celery's "ready" line, and every worker child holding its models where the node says so."""
    if " ready." not in node.log.read_text(errors="replace")[offset:]:
        return False
    try:
        from workers.readiness import readiness
    except ImportError:  # a node from before the warm-up: nothing more to wait for
        return True
    return readiness(node.home).ready_children >= workers


def run_setup(
    name: str, workers: int, broker: str | None, studies: int, template: Dataset | None, single: bool = False
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        orthanc = Orthanc(root / "orthanc").start()
        env = {"CXR_NODE_BROKER_URL": broker} if broker else {}
        env["CXR_NODE_WORKER_CONCURRENCY"] = str(workers)
        env["CXR_NODE_METRICS_PORT"] = str(free_port())
        node = NodeProcess(root, orthanc, **env)
        try:
            started = time.perf_counter()
            if broker and single:  # one `cxr-node worker` with its default concurrency
                node.start("--no-worker")
                node.spawn("worker")
            elif broker:
                node.start("--no-worker")
                for _ in range(workers):
                    node.spawn("worker", "--concurrency", "1")
            else:
                node.start()
            wait_until(
                lambda: workers_ready(node, 0, workers), timeout=600, interval=0.1, what="workers ready"
            )
            ready_s = time.perf_counter() - started
            latencies = []
            for path, study in make_studies(root / "latency", studies, template):
                started = time.perf_counter()
                sent = storescu(node.port, path)
                assert sent.returncode == 0, sent.stderr[-2000:]
                # Every 0.05 s: 25 ms of measurement delay on average, against an 0.8 s goal.
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=600, interval=0.05)
                latencies.append(time.perf_counter() - started)
            batch = make_studies(root / "throughput", studies, template)
            started = time.perf_counter()
            sent = storescu(node.port, *[p for p, _ in batch])
            assert sent.returncode == 0, sent.stderr[-2000:]
            for _, study in batch:
                wait_until(lambda s=study: sr_arrived(orthanc, s), timeout=1800, interval=0.2)
            elapsed = time.perf_counter() - started
            stages = worker_stages(node.log, skip=0)
        finally:
            node.stop()
            orthanc.stop()
    q = statistics.quantiles(latencies, n=20, method="inclusive")
    return {
        "p50": statistics.median(latencies),
        "p95": q[18],
        "max": max(latencies),
        "ready_s": ready_s,
        "per_hour": studies / elapsed * 3600,
        "stages": stages,
        "latencies": latencies,
    }


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--size", choices=("cr", "full"), default="cr")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared data (for --size full)")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument(
        "--setups",
        default="embedded,redis,redis1",
        help="which of embedded,embedded1,embedded2,redis,redis1,redis2,redis4",
    )
    args = parser.parse_args()
    known = {
        "embedded": ("embedded, default", None, None),
        "embedded1": ("embedded, 1 worker process", 1, None),
        "embedded2": ("embedded, 2 worker processes", 2, None),
        "redis": ("Redis, 1 worker, default -c", None, args.redis),
        "redis1": ("Redis, 1 worker process", 1, args.redis),
        "redis2": ("Redis, 2 worker processes", 2, args.redis),
        "redis4": ("Redis, 4 worker processes", 4, args.redis),
    }
    from node.settings import Settings

    default_workers = Settings().worker_concurrency
    setups = [known[k] for k in args.setups.split(",")]
    template = full_size_dx(args.data / FULL_PICTURE) if args.size == "full" else None
    what = (
        "a full-size 12-bit DX (2800 x 2304, 13 MB)" if args.size == "full" else "the 7.2 MB CR (1955 x 1841)"
    )
    breakdown = []
    print(f"# end-to-end: C-STORE of {what} -> SR in Orthanc; {args.studies} studies; CPU only; {load()}")
    print("# max: the slowest of the latency studies (the first study on each worker child is among them)")
    header = ("p50 s", "p95 s", "max s", "studies/hour", "ready s")
    print(f"{'setup':<30} | " + " | ".join(f"{h:>12}" for h in header))
    print(f"{'-' * 30}-|-" + "-|-".join("-" * 12 for _ in header))
    for name, workers, broker in setups:
        r = run_setup(
            name, workers or default_workers, broker, args.studies, template, single=workers is None
        )
        cells = (r["p50"], r["p95"], r["max"], r["per_hour"], r["ready_s"])
        print(f"{name:<30} | " + " | ".join(f"{c:>12.2f}" for c in cells[:3]), end="")
        print(f" | {cells[3]:>12.0f} | {cells[4]:>12.1f}", flush=True)
        print("#   latencies in the order sent: " + " ".join(f"{x:.2f}" for x in r["latencies"]), flush=True)
        breakdown.append((name, r))
    print(f"# {load()}")
    print("\n# per stage, median ms per study (latency runs and throughput runs together)")
    names: list[str] = []
    for _, r in breakdown:
        for st in r["stages"]:
            names += [k for k in st if k not in names]
    print(f"{'stage':<16} | " + " | ".join(f"{n[:24]:>24}" for n, _ in breakdown))
    print(f"{'-' * 16}-|-" + "-|-".join("-" * 24 for _ in breakdown))
    for stage in (*names, "worker total", "outside"):
        cells = []
        for _, r in breakdown:
            stages = r["stages"]
            if not stages:
                cells.append("(no stage lines)")
            elif stage == "worker total":
                cells.append(f"{statistics.median([sum(st.values()) for st in stages]) * 1000:.0f}")
            elif stage == "outside":
                # Of a latency run: the end-to-end time the worker did not account for.
                inside = [sum(st.values()) for st in stages[: len(r["latencies"])]]
                cells.append(f"{(statistics.median(r['latencies']) - statistics.median(inside)) * 1000:.0f}")
            else:
                # A study without the stage: the node's exporter thread sent that output
                # before the worker got to it. The median is over the studies that have it.
                present = [st[stage] for st in stages if stage in st]
                cell = f"{statistics.median(present) * 1000:.0f}" if present else "-"
                cells.append(
                    cell if len(present) == len(stages) else f"{cell} ({len(present)}/{len(stages)})"
                )
        print(f"{stage:<16} | " + " | ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
