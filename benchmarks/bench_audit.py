"""`cxr-node audit search` at a million audit rows, with and without the 0005 indexes
((kind, created_at) and (calling_ae, created_at)), on SQLite and on PostgreSQL (a private
cluster: initdb into a temporary folder, never the shared server). Prints a table.

    python benchmarks/bench_audit.py [--rows 1000000] [--repeat 5] [--backend sqlite postgresql]

The rows look like a year of a busy node: per instance an association, a receipt, a job
queued/started/succeeded and three exports; rare refusals and dead exports; 20 modalities.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select, text  # noqa: E402

from node.db.audit import events  # noqa: E402
from node.db.engine import dispose_engines, get_engine, session_scope, upgrade  # noqa: E402
from node.db.tables import AuditEvent  # noqa: E402

START = datetime(2025, 12, 1, tzinfo=UTC)
DAYS = 365
AES = [f"MOD{i:02d}" for i in range(20)]
# One instance's events: (kind, from the modality?)
LIFE = [
    ("association.accepted", True),
    ("instance.received", True),
    ("job.queued", True),
    ("job.started", False),
    ("job.succeeded", False),
    ("result.created", False),
    ("export.sent", False),
    ("export.sent", False),
    ("export.sent", False),
]


def rows(count: int, seed: int = 0) -> Iterator[tuple[Any, ...]]:
    """(created_at, kind, outcome, calling_ae, study, sop, message) in time order."""
    rng = random.Random(seed)
    step = timedelta(days=DAYS) / count
    when, i, n = START, 0, 0
    while n < count:
        ae = rng.choice(AES)
        study = f"2.25.{rng.getrandbits(96)}"
        for kind, from_modality in LIFE:
            if kind == "instance.received" and rng.random() < 0.005:
                kind = "instance.rejected"
            if kind == "export.sent" and rng.random() < 0.0005:
                kind = "export.dead"
            yield (when, kind, "success", ae if from_modality else None, study, f"{study}.{i}", "")
            when += step
            n += 1
            if n == count:
                return
        i += 1


def fill(url: str, count: int) -> float:
    started = time.perf_counter()
    engine = get_engine(url)
    batch: list[dict[str, Any]] = []
    keys = (
        "created_at",
        "kind",
        "outcome",
        "calling_ae",
        "study_instance_uid",
        "sop_instance_uid",
        "message",
    )
    with engine.begin() as conn:
        for row in rows(count):
            batch.append(dict(zip(keys, row, strict=True)))
            if len(batch) == 20_000:
                conn.execute(AuditEvent.__table__.insert(), batch)
                batch = []
        if batch:
            conn.execute(AuditEvent.__table__.insert(), batch)
    analyze(url)
    return time.perf_counter() - started


def analyze(url: str) -> None:
    with get_engine(url).begin() as conn:
        conn.execute(text("ANALYZE"))


def queries(study: str) -> dict[str, Callable[[str], int]]:
    week = (START + timedelta(days=200), START + timedelta(days=207))
    month = (START + timedelta(days=100), START + timedelta(days=130))
    day = (START + timedelta(days=300), START + timedelta(days=301))
    return {
        "one calling AE, one week": lambda url: len(
            events(calling_ae="MOD07", since=week[0], until=week[1], url=url)
        ),
        "refusals (instance.rejected), 30 days": lambda url: len(
            events(kind="instance.rejected", since=month[0], until=month[1], url=url)
        ),
        "dead exports, all time": lambda url: len(events(kind="export.dead", url=url)),
        "instance.received, one day": lambda url: len(
            events(kind="instance.received", since=day[0], until=day[1], url=url)
        ),
        "one AE's receipts, one day": lambda url: len(
            events(kind="instance.received", calling_ae="MOD03", since=day[0], until=day[1], url=url)
        ),
        "one study (indexed before 0005)": lambda url: len(events(study_instance_uid=study, url=url)),
        "/metrics: last received/finished": lambda url: last_seen(url),
    }


def last_seen(url: str) -> int:
    from node.metrics import _last_seen

    with session_scope(url) as session:
        return len(_last_seen(session))


def timed(fn: Callable[[str], int], url: str, repeat: int) -> tuple[float, int]:
    fn(url)  # warm the cache: both columns measure a warm database
    times, found = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        found = fn(url)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, found


def bench(backend: str, url: str, count: int, repeat: int) -> list[tuple[str, ...]]:
    upgrade(url, "0004")  # the schema before the audit-search indexes
    fill_s = fill(url, count)
    with session_scope(url) as session:
        study = session.scalar(select(AuditEvent.study_instance_uid).where(AuditEvent.id == count // 2))
    plan = queries(str(study))
    before = {name: timed(fn, url, repeat) for name, fn in plan.items()}
    started = time.perf_counter()
    upgrade(url, "0005")
    analyze(url)
    index_s = time.perf_counter() - started
    after = {name: timed(fn, url, repeat) for name, fn in plan.items()}
    print(
        f"{backend}: {count:,} rows filled in {fill_s:.0f} s; 0005 indexes built in {index_s:.1f} s",
        file=sys.stderr,
    )
    out = []
    for name in plan:
        (ms0, n0), (ms1, n1) = before[name], after[name]
        assert n0 == n1, (name, n0, n1)
        out.append((backend, name, f"{n1:,}", f"{ms0:.1f}", f"{ms1:.1f}", f"{ms0 / ms1:.1f}x"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    table: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="cxr-bench-audit-") as tmp:
        if "sqlite" in args.backend:
            table += bench("SQLite", f"sqlite:///{Path(tmp) / 'audit.sqlite'}", args.rows, args.repeat)
            dispose_engines()
        if "postgresql" in args.backend:
            from tests.postgres import PrivatePostgres

            pg = PrivatePostgres().init()
            try:
                table += bench("PostgreSQL", pg.url, args.rows, args.repeat)
            finally:
                dispose_engines()
                pg.destroy()
    header = ("backend", "query", "rows", "without 0005 (ms)", "with 0005 (ms)", "speed-up")
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(
        f"median of {args.repeat} warm runs each, through node.db.audit.events "
        "(what `cxr-node audit search` calls)"
    )


if __name__ == "__main__":
    main()
