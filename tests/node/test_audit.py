"""The audit log on SQLite and on the running PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

from node.db.audit import EventKind, Outcome, events, record, tail
from node.db.engine import get_engine, upgrade


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, node_config, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return request.getfixturevalue("postgres_url")


def test_migrations_create_the_schema(db_url: str) -> None:
    upgrade(db_url)
    tables = set(inspect(get_engine(db_url)).get_table_names())
    assert {"audit_events", "instances", "alembic_version"} <= tables
    indexes = {i["name"]: i["column_names"] for i in inspect(get_engine(db_url)).get_indexes("audit_events")}
    assert indexes["ix_audit_events_kind_created_at"] == ["kind", "created_at"]  # 0004: audit search
    assert indexes["ix_audit_events_calling_ae_created_at"] == ["calling_ae", "created_at"]
    upgrade(db_url)  # idempotent


def test_events_round_trip_with_aware_timestamps(db_url: str) -> None:
    upgrade(db_url)
    before = datetime.now(UTC)
    assert record(
        EventKind.INSTANCE_RECEIVED,
        Outcome.SUCCESS,
        "CR 1000 bytes",
        calling_ae="MODALITY",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        sop_instance_uid="1.2.3.4.5",
        duration_ms=12.5,
        url=db_url,
    )
    record(EventKind.JOB_QUEUED, study_instance_uid="9.9", sop_instance_uid="9.9.9", url=db_url)
    rows = events(url=db_url)
    assert [r.kind for r in rows] == ["instance.received", "job.queued"]
    first = rows[0]
    assert first.created_at.tzinfo is not None
    assert before - timedelta(seconds=5) <= first.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert (first.calling_ae, first.sop_instance_uid, first.duration_ms) == (
        "MODALITY",
        "1.2.3.4.5",
        12.5,
    )
    assert [r.kind for r in events(study_instance_uid="9.9", url=db_url)] == ["job.queued"]


def test_tail_prints_last_lines_and_filters_by_study(db_url: str) -> None:
    upgrade(db_url)
    for i in range(30):
        record(
            EventKind.ECHO,
            calling_ae=f"AE{i}",
            study_instance_uid="1.1" if i % 2 else "2.2",
            url=db_url,
        )
    lines = list(tail(lines=5, url=db_url))
    assert len(lines) == 5 and "ae=AE29" in lines[-1] and "ae=AE25" in lines[0]
    assert all("study=2.2" in line for line in tail(lines=100, study_instance_uid="2.2", url=db_url))


def test_tail_follow_yields_new_events(db_url: str) -> None:
    import threading

    upgrade(db_url)
    record(EventKind.NODE_STARTED, url=db_url)
    follower = tail(lines=1, follow=True, poll_seconds=0.05, max_seconds=10, url=db_url)
    assert "node.started" in next(follower)
    threading.Timer(0.2, lambda: record(EventKind.ECHO, calling_ae="LATER", url=db_url)).start()
    assert "ae=LATER" in next(follower)


def test_audit_rows_cannot_be_updated_or_deleted(db_url: str) -> None:
    upgrade(db_url)
    record(EventKind.ECHO, calling_ae="MODALITY", url=db_url)
    engine = get_engine(db_url)
    for statement in ("UPDATE audit_events SET message = 'changed'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
    assert [e.message for e in events(url=db_url)] == [""]


def test_record_never_raises_when_the_database_is_gone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'audit.sqlite'}"
    # No migrations applied: the table does not exist. record() logs and says False.
    assert record(EventKind.ECHO, url=url) is False


def test_postgres_refuses_truncate(postgres_url: str) -> None:
    upgrade(postgres_url)
    record(EventKind.ECHO, url=postgres_url)
    with pytest.raises(DBAPIError, match="append-only"):
        with get_engine(postgres_url).begin() as conn:
            conn.execute(text("TRUNCATE audit_events"))
    assert len(events(url=postgres_url)) == 1


def _add_events(url: str) -> datetime:
    """Six events an hour apart from ``t0``, two calling AEs, two studies; returns ``t0``."""
    from node.db.engine import session_scope
    from node.db.tables import AuditEvent

    t0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    rows = [
        ("instance.received", "CT1", "1.1"),
        ("instance.rejected", "CT1", "1.1"),
        ("instance.received", "DX2", "2.2"),
        ("export.sent", None, "2.2"),
        ("export.dead", None, "1.1"),
        ("instance.received", "DX2", "1.1"),
    ]
    with session_scope(url) as session:
        for hour, (kind, ae, study) in enumerate(rows):
            session.add(
                AuditEvent(
                    created_at=t0 + timedelta(hours=hour),
                    kind=kind,
                    outcome="success",
                    calling_ae=ae,
                    study_instance_uid=study,
                    sop_instance_uid=f"{study}.{hour}",
                    message=f"event {hour}",
                )
            )
    return t0


def test_search_by_time_event_calling_ae_and_study(db_url: str) -> None:
    upgrade(db_url)
    t0 = _add_events(db_url)

    def hours(**filters) -> list[int]:  # type: ignore[no-untyped-def]
        return [int(e.message.split()[-1]) for e in events(url=db_url, **filters)]

    assert hours(since=t0 + timedelta(hours=1), until=t0 + timedelta(hours=4)) == [1, 2, 3]
    assert hours(kind="instance.received") == [0, 2, 5]
    assert hours(kind="export") == [3, 4]  # a prefix
    assert hours(kind="instance.received", calling_ae="DX2") == [2, 5]
    assert hours(study_instance_uid="1.1", since=t0 + timedelta(hours=2)) == [4, 5]
    assert hours(calling_ae="NOBODY") == []


def test_audit_search_command_exports_csv_and_json(node_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import csv
    import json
    import os
    import subprocess

    from tests.helpers import CLI

    upgrade(node_config.db_url)
    _add_events(node_config.db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    env["CXR_NODE_HOME"] = str(node_config.home)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "audit", "search", *args], env=env, capture_output=True, text=True, timeout=120
        )

    out = tmp_path / "received.csv"
    done = cli(
        "--event", "instance.received", "--since", "2026-11-02T09:00+00:00", "--format", "csv", "-o", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "2 event(s) written" in done.stderr
    rows = list(csv.DictReader(out.open(newline="")))
    assert [(r["calling_ae"], r["study_instance_uid"], r["created_at"]) for r in rows] == [
        ("DX2", "2.2", "2026-11-02T10:00:00.000000+00:00"),
        ("DX2", "1.1", "2026-11-02T13:00:00.000000+00:00"),
    ]
    done = cli("--calling-ae", "CT1", "--study", "1.1", "--until", "2026-11-02T09:00Z", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [(e["kind"], e["sop_instance_uid"]) for e in json.loads(done.stdout)] == [
        ("instance.received", "1.1.0")
    ]
    done = cli("--since", "yesterday")
    assert done.returncode == 2 and "--since 'yesterday' is not an ISO 8601" in done.stderr
    done = cli("--format", "xml")
    assert done.returncode == 2 and "choose text, csv or json" in done.stderr
