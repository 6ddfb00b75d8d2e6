"""Migrations across an upgrade or a downgrade of the software: atomic on SQLite, one at a time
on PostgreSQL, and a database whose schema is not this version's is refused or reported.

The head revision is read from the Alembic script directory, never written here: a new
revision must not need these tests changed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from node.db.engine import MIGRATIONS_DIR, upgrade
from node.metrics import health
from node.settings import Settings
from tests.helpers import CLI, cli_env, schema_revisions, wait_until

REPO = Path(__file__).resolve().parents[2]
NEWER = "9999"  # the revision a later version of the software migrated the database to

HEAD, PREVIOUS = schema_revisions()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path / "home")


def cxr(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def revisions(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]


def stamp(path: Path, revision: str) -> None:
    """What a downgrade of the software or an interrupted upgrade leaves: another revision."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def indexes(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute(f"PRAGMA index_list({table})")}


# SQLite: a migration killed half-way leaves the revision it started from ---------------------

INTERRUPTED = '''"""A test's migration: creates an index and a table, then waits to be killed."""

import os
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "t001"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_events_message", "audit_events", ["message"])
    op.create_table("half_made", sa.Column("id", sa.Integer, primary_key=True))
    Path(os.environ["MIGRATION_MARKER"]).touch()
    if os.environ.get("MIGRATION_HANGS"):
        time.sleep(300)


def downgrade() -> None:
    op.drop_table("half_made")
    op.drop_index("ix_audit_events_message", "audit_events")
'''

UPGRADE = (
    "import sys; from alembic import command; from node.db.engine import alembic_config; "
    "cfg = alembic_config(sys.argv[1]); cfg.set_main_option('script_location', sys.argv[2]); "
    "command.upgrade(cfg, 'head')"
)


def test_a_migration_killed_half_way_leaves_the_revision_it_started_from(tmp_path: Path) -> None:
    """kill -9 while migrating used to keep what the migration had made (the index of 0005)
    and the old revision, so that every later upgrade failed on 'index ... already exists'."""
    scripts = tmp_path / "migrations"  # this checkout's env.py and revisions, plus one more
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "t001_interrupted.py").write_text(INTERRUPTED.format(head=HEAD))
    path = tmp_path / "audit.sqlite"
    url = f"sqlite:///{path}"
    upgrade(url, PREVIOUS)
    marker = tmp_path / "marker"
    run = [sys.executable, "-c", UPGRADE, url, str(scripts)]
    env = {**os.environ, "MIGRATION_MARKER": str(marker), "MIGRATION_HANGS": "1"}
    proc = subprocess.Popen(run, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: marker.exists() or proc.poll() is not None, timeout=120, what="the migration")
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # Nothing of this run: neither the head's migration nor the half-made one.
    assert revisions(path) == [PREVIOUS]
    assert "ix_audit_events_message" not in indexes(path, "audit_events")
    assert "half_made" not in inspect(create_engine(url)).get_table_names()
    # And the next start migrates as if nothing had happened.
    again = subprocess.run(
        run, cwd=REPO, env={**os.environ, "MIGRATION_MARKER": str(marker)}, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert revisions(path) == ["t001"] and "ix_audit_events_message" in indexes(path, "audit_events")


# PostgreSQL: two upgrades at once take turns ----------------------------------------------


def waiting_on_locks(engine: Engine, database: str) -> int:
    """Backends of ``database`` waiting for a lock (a transaction of its own: PostgreSQL keeps
    pg_stat_activity as it first read it until the transaction ends)."""
    with engine.connect() as conn:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
        return int(conn.execute(text(query), {"db": database}).scalar_one())


def test_two_upgrades_at_once_take_turns(postgres_url: str, env: dict[str, str]) -> None:
    """Two `cxr-node db upgrade` of a fresh database: one used to fail with UniqueViolation."""
    engine = create_engine(postgres_url)
    database = postgres_url.rsplit("/", 1)[1]
    env = {**env, "CXR_NODE_DATABASE_URL": postgres_url}
    # Both are held at one point (creating Alembic's version table, which this test's open
    # transaction creates too), so that they surely overlap, then let go together.
    with engine.connect() as gate:
        gate.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        procs = [
            subprocess.Popen([*CLI, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        try:
            wait_until(
                lambda: waiting_on_locks(engine, database) == 2 or any(p.poll() is not None for p in procs),
                timeout=120,
                what="both upgrades waiting",
            )
            assert all(p.poll() is None for p in procs), "an upgrade ended before the other began"
        finally:
            gate.rollback()
        done = [p.communicate(timeout=120) for p in procs]
    for proc, (_, stderr) in zip(procs, done, strict=True):
        assert proc.returncode == 0, stderr.decode()[-2000:]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    index_names = [i["name"] for i in inspect(engine).get_indexes("audit_events")]
    assert index_names.count("ix_audit_events_kind_created_at") == 1
    engine.dispose()


# A schema that is not this version's: refused on start, reported by status and /health -----


def one_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "─" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cxr-node: "), done.stderr
    for word in words:
        assert word in last, last
    return last


def test_serve_refuses_a_database_newer_than_this_version(env: dict[str, str], tmp_path: Path) -> None:
    """A downgrade of the software: one line and exit 1, not a Rich traceback ending in
    alembic's "Can't locate revision identified by ..."."""
    assert cxr(env, "db", "upgrade").returncode == 0
    database = tmp_path / "home" / "audit.sqlite"
    stamp(database, NEWER)
    last = one_line(
        cxr(env, "serve", "--no-worker"),
        f"database schema {NEWER} is newer than this version's (head {HEAD})",
        "refusing to start",
        f"alembic -c migrations/alembic.ini downgrade {HEAD} with the newer code",
    )
    assert "Can't locate revision" not in last
    one_line(cxr(env, "db", "upgrade"), f"database schema {NEWER} is newer", "refusing to upgrade")
    assert revisions(database) == [NEWER]  # untouched


@pytest.mark.parametrize(
    ("revision", "words"),
    [
        (PREVIOUS, f"database schema {PREVIOUS} is behind this version's {HEAD}: run `cxr-node db upgrade`"),
        (NEWER, f"database schema {NEWER} is newer than this version's (head {HEAD})"),
    ],
    ids=["behind", "newer"],
)
def test_status_and_health_report_a_schema_that_is_not_this_versions(
    node_config: Settings, env: dict[str, str], revision: str, words: str
) -> None:
    env = {**env, "CXR_NODE_HOME": str(node_config.home)}
    upgrade(node_config.db_url)
    status, body = health(node_config)
    assert status == 200 and body["database"] == "ok"
    assert cxr(env, "status").returncode == 0
    stamp(node_config.home / "audit.sqlite", revision)
    status, body = health(node_config)
    assert status == 503, body
    assert body["status"] == "unavailable" and words in body["database"]
    assert body["schema"] == {"database": [revision], "head": HEAD}
    assert body["ready"] is False
    done = cxr(env, "status")
    assert done.returncode == 1, done.stdout
    assert words in " ".join(done.stdout.split()) and "database ok" not in done.stdout
