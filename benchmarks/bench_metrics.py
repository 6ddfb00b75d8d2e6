"""Cost of one /metrics scrape (node.metrics.snapshot reads the database) as the
audit table grows: SQLite in a temporary home, or PostgreSQL with --database-url.
Prints a table.

    python benchmarks/bench_metrics.py [--rows 10000 100000 1000000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from node import settings as node_settings  # noqa: E402
from node.db.engine import dispose_engines, session_scope, upgrade  # noqa: E402
from node.db.tables import AuditEvent, utcnow  # noqa: E402
from node.metrics import snapshot  # noqa: E402

KINDS = ["instance.received", "job.queued", "job.started", "job.succeeded", "result.created", "export.sent"]


def fill(rows: int, already: int) -> None:
    """Append audit rows (a realistic mix of kinds, durations on most) up to ``rows``."""
    now = utcnow()
    batch = [
        {
            "created_at": now,
            "kind": KINDS[i % len(KINDS)],
            "outcome": "success",
            "message": "",
            "duration_ms": float(i % 5000) if i % 3 else None,
        }
        for i in range(already, rows)
    ]
    with session_scope() as session:
        for start in range(0, len(batch), 50_000):
            session.execute(insert(AuditEvent), batch[start : start + 50_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary home)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        node_settings.reset()
        settings = node_settings.configure(home=Path(home), database_url=args.database_url)
        upgrade(settings.db_url)
        print(f"{'audit rows':>12} {'scrape ms (median)':>20} {'max':>8}   ({settings.db_url.split(':')[0]})")
        done = 0
        for rows in sorted(args.rows):
            fill(rows, done)
            done = rows
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                assert snapshot().database_ok
                times.append((time.perf_counter() - started) * 1000)
            print(f"{rows:>12} {statistics.median(times):>20.1f} {max(times):>8.1f}")
        dispose_engines()


if __name__ == "__main__":
    main()
