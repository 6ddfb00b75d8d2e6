"""Engines, sessions and migrations for the audit database.

Engines are made lazily, one per URL and process (never at import), so forked
Celery workers and tests can each point at their own database.

The schema is this version's when the database's Alembic revision is the head
of ``migrations/versions`` (:func:`schema_state`): ``serve`` migrates on start
and refuses a database newer than its code, workers wait for the head
(``workers.readiness.wait_for_schema``), ``/health`` and ``cxr-node status``
report a mismatch.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from node.exceptions import ConfigurationError
from node.settings import get_settings

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets `audit tail -f` read while the SCP threads write.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the settings' database), made once per process."""
    url = url or get_settings().db_url
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                if parsed.database and parsed.database != ":memory:":
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests; after fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(get_engine(url), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be doubled for configparser interpolation.
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().db_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head", refusing: str = "upgrade it") -> SchemaState:
    """Apply the Alembic migrations up to ``revision``, all in one transaction (see
    :func:`migration_connection` and ``migrations/env.py``); returns where the schema stood
    before.

    Raises ConfigurationError (saying it refuses to ``refusing``) for a database newer than
    this version: Alembic cannot place its revision, and downgrading it takes the newer
    version's migrations.
    """
    from alembic import command

    state = schema_state(url)
    if state.is_newer:
        raise ConfigurationError(state.refusal(refusing))
    command.upgrade(alembic_config(url), revision)
    logger.info(
        "database at %s upgraded to %s",
        make_url(url or get_settings().db_url).render_as_string(hide_password=True),
        revision,
    )
    return state


def _sqlite_own_transactions(dbapi_connection, connection_record) -> None:  # type: ignore[no-untyped-def]
    # pysqlite's legacy transaction control sends no BEGIN before DDL, so each CREATE or
    # ALTER committed on its own; SQLAlchemy sends BEGIN instead (_sqlite_begin_immediate).
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Connection) -> None:
    # IMMEDIATE: the write lock from the start, so a second migration waits (busy_timeout)
    # for the first to commit and then reads its revision.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def migration_connection(url: str) -> Iterator[Connection]:
    """The connection Alembic migrates through (``migrations/env.py``).

    SQLite has transactional DDL but pysqlite does not use it: a migration killed after
    creating an index left the index and the old revision, and every later upgrade
    failed on it. Here SQLAlchemy sends the BEGIN itself (SQLAlchemy's SQLite
    documentation, "Enabling Non-Legacy SQLite Transactional Modes"), on an engine of
    its own so that the node's sessions keep pysqlite's behaviour. In-memory SQLite and
    other databases use the usual engine (PostgreSQL's DDL is transactional).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        with get_engine(url).connect() as connection:
            yield connection
        return
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "connect", _sqlite_own_transactions)
    event.listen(engine, "begin", _sqlite_begin_immediate)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SchemaState:
    """The database's Alembic revision against the head of this version's migrations."""

    current: tuple[str, ...]  # the database's revision(s); empty: never migrated
    head: str
    known: frozenset[str]  # every revision this version has

    @property
    def is_current(self) -> bool:
        return self.current == (self.head,)

    @property
    def is_newer(self) -> bool:
        """A revision this version does not know: a newer version migrated the database."""
        return any(revision not in self.known for revision in self.current)

    @property
    def summary(self) -> str:
        revision = ", ".join(self.current)
        if self.is_current:
            return f"database schema {revision} is this version's"
        if self.is_newer:
            return f"database schema {revision} is newer than this version's (head {self.head})"
        if not self.current:
            return f"database has no schema yet (this version's is {self.head})"
        return f"database schema {revision} is behind this version's {self.head}"

    @property
    def remedy(self) -> str:
        if self.is_newer:
            return (
                "run the newer version or downgrade the database "
                f"(alembic -c migrations/alembic.ini downgrade {self.head} with the newer code)"
            )
        return "run `cxr-node db upgrade` (serve does it on start)"

    @property
    def problem(self) -> str | None:
        """One line for an operator; None when the schema is this version's."""
        return None if self.is_current else f"{self.summary}: {self.remedy}"

    def refusal(self, what: str = "start") -> str:
        return f"{self.summary}: refusing to {what}; {self.remedy}"

    def as_json(self) -> dict[str, Any]:
        return {"database": list(self.current), "head": self.head}


@functools.cache
def code_revisions(script_location: str = str(MIGRATIONS_DIR)) -> tuple[str, frozenset[str]]:
    """This version's head revision and every revision it knows, read once per process
    from the Alembic script directory (the code does not change under a running process)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(script_location)
    head = script.get_current_head()
    if head is None:
        raise ConfigurationError(f"no Alembic revision in {script_location}")
    return head, frozenset(s.revision for s in script.walk_revisions())


def schema_state(url: str | None = None) -> SchemaState:
    """Where the database's schema stands against this version (raises SQLAlchemyError if
    the database cannot be read)."""
    head, known = code_revisions()
    with get_engine(url).connect() as connection:
        # Alembic's version table read directly: MigrationContext.get_current_heads() reads
        # the same but logs its dialect at INFO each time, and /health is polled.
        if inspect(connection).has_table("alembic_version"):
            current = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
            revisions = tuple(sorted(current))
        else:
            revisions = ()
    return SchemaState(revisions, head, known)
