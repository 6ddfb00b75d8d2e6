"""Audit events as a compliance officer reads them: CSV or JSON, one row per event.

Only what an event holds is written: times, kinds, outcomes, AE titles, peers,
UIDs, messages. No patient data is ever in the audit log, so none is in an export.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO, Any

from node.db.tables import AuditEvent

COLUMNS = (
    "id",
    "created_at",
    "kind",
    "outcome",
    "calling_ae",
    "peer",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "duration_ms",
    "message",
)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    """One event as plain values; ``created_at`` in ISO 8601 with its UTC offset."""
    row = {column: getattr(event, column) for column in COLUMNS}
    row["created_at"] = event.created_at.isoformat(timespec="microseconds")
    return row


def write_csv(events: Iterable[AuditEvent], out: IO[str]) -> int:
    """RFC 4180 CSV with a header row. Returns the count of events written."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for event in events:
        writer.writerow(as_dict(event))
        count += 1
    return count


def write_json(events: Iterable[AuditEvent], out: IO[str]) -> int:
    """A JSON array of objects, one per event. Returns the count written."""
    rows = [as_dict(event) for event in events]
    json.dump(rows, out, indent=1)
    out.write("\n")
    return len(rows)
