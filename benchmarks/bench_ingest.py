"""Ingest rate of the SCP: instances per second over one association and over
eight concurrent associations, on this machine, embedded defaults (SQLite,
filesystem broker), no worker. Prints a table.

    python benchmarks/bench_ingest.py [--count 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from node import settings as node_settings  # noqa: E402
from node.scu import send_datasets  # noqa: E402
from node.service import Node  # noqa: E402
from node.settings import Destination  # noqa: E402
from tests.helpers import pydicom_data_file, with_new_uids  # noqa: E402


def datasets(count: int) -> list[Dataset]:
    """``count`` copies of a real CR chest PA (7.2 MB, pydicom-data RG1) with new UIDs."""
    template = dcmread(pydicom_data_file("RG1_UNCR.dcm"))
    return [with_new_uids(template) for _ in range(count)]


def run(count: int, associations: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as home:
        node_settings.reset()
        settings = node_settings.configure(
            home=Path(home), port=0, embedded_worker=False, sweep_interval_seconds=3600
        )
        node = Node(settings)
        host, port = node.start()
        try:
            items = datasets(count)
            chunks = [items[i::associations] for i in range(associations)]
            destination = Destination(settings.ae_title, host, port)
            started = time.perf_counter()
            with ThreadPoolExecutor(associations) as pool:
                results = [
                    r
                    for rs in pool.map(lambda chunk: send_datasets(chunk, destination, "BENCH"), chunks)
                    for r in rs
                ]
            elapsed = time.perf_counter() - started
            failed = sum(not r.ok for r in results)
        finally:
            node.stop()
    return count / elapsed, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    bytes_each = pydicom_data_file("RG1_UNCR.dcm").stat().st_size
    print(
        f"# ingest benchmark: {args.count} instances of {bytes_each / 1e6:.1f} MB, "
        f"{os.cpu_count()} CPUs, SQLite + filesystem broker, median of {args.repeat}"
    )
    print(f"{'associations':>12} | {'instances/s':>11} | {'MB/s':>7} | {'failed':>6}")
    print(f"{'-' * 12}-|-{'-' * 11}-|-{'-' * 7}-|-{'-' * 6}")
    for associations in (1, 8):
        rates, failures = [], 0
        for _ in range(args.repeat):
            rate, failed = run(args.count, associations)
            rates.append(rate)
            failures += failed
        rate = statistics.median(rates)
        print(f"{associations:>12} | {rate:>11.1f} | {rate * bytes_each / 1e6:>7.1f} | {failures:>6}")


if __name__ == "__main__":
    main()
