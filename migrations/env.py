"""Alembic environment: the URL comes from the node's settings (or the caller's config).

An upgrade runs in one transaction on PostgreSQL and SQLite alike, holding the migration
lock: stopped half-way (killed, a failing step), it leaves the revision it started from
and nothing of the steps after it; two at once (a ``serve`` starting beside a ``cxr-node
db upgrade``, two nodes of one database) take turns, and the second finds nothing to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, func, select

from node.db.engine import migration_connection
from node.db.tables import Base
from node.settings import get_settings

config = context.config
target_metadata = Base.metadata

# pg_advisory_xact_lock's key, the same for every process of every version ("cxrnode").
MIGRATION_LOCK = 0x6378726E6F6465


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().db_url


def _take_migration_lock(connection: Connection) -> None:
    """Held until the transaction ends. Alembic reads the database's revision after it,
    so the second upgrade sees what the first committed. PostgreSQL: an advisory lock
    (a migration that needed ``autocommit_block`` would end it early); SQLite: the write
    lock that ``BEGIN IMMEDIATE`` took already (node.db.engine.migration_connection)."""
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with migration_connection(_url()) as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            # Alembic assumes none on SQLite, whose DDL is transactional all the same
            # (pysqlite's implicit transactions are off on this connection).
            transactional_ddl=True,
        )
        with context.begin_transaction():
            _take_migration_lock(connection)
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
