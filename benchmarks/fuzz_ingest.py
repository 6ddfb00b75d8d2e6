"""Fuzzing campaign against a running node: hypothesis-generated mutations of real CR/DX/SC
files (tests/reliability/fuzzing.py) sent over the network, one C-STORE each. Prints a table:
answered with a status (by status), refused, stored, analysed, crashed, and the accounting
(every acknowledged instance in the spool, every stored one in the audit).

    python benchmarks/fuzz_ingest.py [--cases 10000] [--analysed 40] [--seed 0]

Phase 1 sends ``--cases`` cases to a node with no worker (ingest is the subject); phase 2
sends ``--analysed`` more to a node with its embedded worker and waits until every stored,
eligible instance is analysed or has failed with an audit row.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.reliability.fuzzing import (  # noqa: E402
    Campaign,
    Case,
    FuzzNode,
    accounting,
    cases,
    wait_analysed,
)


def campaign(workdir: Path, count: int, rng_seed: int, worker: bool, storescu_every: int) -> dict:
    node = FuzzNode(workdir / "node", worker=worker)
    run = Campaign(node, workdir, storescu_every=storescu_every)
    restarts = 0

    @seed(rng_seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def one(case: Case) -> None:
        nonlocal restarts
        before = len(run.crashed)
        run.run_case(case)
        if len(run.crashed) > before and not node.alive():
            node.start()  # count it and go on
            restarts += 1
        if len(run.outcomes) % 500 == 0:
            print(f"  {len(run.outcomes)} cases, {time.strftime('%H:%M:%S')}", file=sys.stderr)

    started = time.perf_counter()
    node.start()
    try:
        one()
        elapsed = time.perf_counter() - started
        books = (
            wait_analysed(node.home, run.outcomes, 1800) if worker else accounting(node.home, run.outcomes)
        )
        alive = node.alive()
        worker_alive = node.worker_alive() if worker else None
    finally:
        node.stop()
    return {
        "answers": run.table(),
        "books": books,
        "crashed": run.crashed,
        "restarts": restarts,
        "alive": alive,
        "worker_alive": worker_alive,
        "seconds": elapsed,
        "cases": len(run.outcomes),
    }


def print_table(title: str, result: dict) -> None:
    answers: Counter[str] = result["answers"]
    statuses = {a: n for a, n in answers.items() if a.startswith("0x")}
    refused = {a: n for a, n in answers.items() if a.startswith("refused")}
    other = {a: n for a, n in answers.items() if not a.startswith(("0x", "refused"))}
    books = result["books"]
    print(
        f"\n{title}: {result['cases']} cases in {result['seconds']:.0f} s "
        f"({result['cases'] / result['seconds']:.1f} cases/s)"
    )
    print(f"| {'outcome':<44} | {'cases':>7} |")
    print(f"|{'-' * 46}|{'-' * 9}|")
    print(f"| {'answered with a status':<44} | {sum(statuses.values()):>7} |")
    for answer, n in sorted(statuses.items()):
        print(f"| {'  ' + answer:<44} | {n:>7} |")
    print(f"| {'refused (association rejected/aborted)':<44} | {sum(refused.values()):>7} |")
    for answer, n in sorted(refused.items()):
        print(f"| {'  ' + answer.removeprefix('refused: '):<44} | {n:>7} |")
    for answer, n in sorted(other.items()):
        print(f"| {answer[:44]:<44} | {n:>7} |")
    print(f"| {'stored (in the spool)':<44} | {books['stored']:>7} |")
    print(f"| {'  of which eligible for analysis':<44} | {books['eligible']:>7} |")
    print(f"| {'analysed (job.succeeded)':<44} | {books['analysed']:>7} |")
    print(f"| {'analysis failed (job.failed, audited)':<44} | {books['analysis_failed']:>7} |")
    print(f"| {'crashed or hung (node)':<44} | {len(result['crashed']):>7} |")
    print(f"| {'acknowledged but lost':<44} | {len(books['lost']):>7} |")
    print(f"| {'stored without an audit row':<44} | {len(books['unaudited']):>7} |")
    worker = {None: "n/a", True: "yes", False: "NO"}[result["worker_alive"]]
    print(f"node alive at the end: {'yes' if result['alive'] else 'NO'}; worker alive: {worker}")
    for case in result["crashed"][:10]:
        print(f"  crash: {case}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--analysed", type=int, default=40, help="cases sent with the worker on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storescu-every", type=int, default=100, help="every n-th case via storescu")
    parser.add_argument("--keep", type=Path, help="work here and keep it (node logs, spool, audit)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cxr-fuzz-") as scratch:
        tmp = args.keep or scratch
        ingest = campaign(Path(tmp) / "ingest", args.cases, args.seed, False, args.storescu_every)
        print_table("Ingest (no worker)", ingest)
        if args.analysed:
            analysed = campaign(Path(tmp) / "analysed", args.analysed, args.seed + 1, True, 0)
            print_table("With the embedded worker", analysed)


if __name__ == "__main__":
    main()
