"""A worker takes no task before the database is at this version's Alembic head.

Started beside the node that migrates (compose, Kubernetes), a worker of a new version used to
analyse against the old schema, send results without the archive ("column ... does not
exist") and fail the job for good.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from node.db.engine import upgrade
from node.exceptions import ConfigurationError
from tests.helpers import CLI, schema_revisions, wait_until

HEAD, PREVIOUS = schema_revisions()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    return {**clean, "CXR_NODE_HOME": str(home)}


def announced(home: Path) -> list[Path]:
    """The readiness file a worker writes just before Celery starts taking tasks."""
    return list((home / "workers").glob("*/expected"))


def test_a_worker_waits_for_the_node_to_migrate(home: Path, env: dict[str, str], tmp_path: Path) -> None:
    url = f"sqlite:///{home / 'audit.sqlite'}"
    upgrade(url, PREVIOUS)
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*CLI, "worker", "--pool", "solo"], env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: "waiting" in log.read_text() or proc.poll() is not None, timeout=120, what="wait")
        assert proc.poll() is None, log.read_text()
        line = next(line for line in log.read_text().splitlines() if "waiting" in line)
        assert (
            f"database schema {PREVIOUS} is behind this version's {HEAD}: run `cxr-node db upgrade`" in line
        )
        assert not announced(home)
        upgrade(url)  # the node migrates
        wait_until(lambda: announced(home) or proc.poll() is not None, timeout=60, what="the worker starting")
        assert proc.poll() is None, log.read_text()
        assert announced(home)
    finally:
        proc.send_signal(signal.SIGKILL)  # one process (solo pool), maybe loading its models
        proc.wait(timeout=30)


def test_a_worker_refuses_a_database_newer_than_this_version(home: Path, env: dict[str, str]) -> None:
    url = f"sqlite:///{home / 'audit.sqlite'}"
    upgrade(url)
    with sqlite3.connect(home / "audit.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    done = subprocess.run(
        [*CLI, "worker", "--pool", "solo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"cxr-node: database schema 9999 is newer than this version's (head {HEAD}): refusing to start; "
        "run the newer version or downgrade the database "
        f"(alembic -c migrations/alembic.ini downgrade {HEAD} with the newer code)"
    )
    assert not announced(home)


@pytest.mark.usefixtures("node_config")
def test_the_wait_says_why_once_in_a_while(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from workers.readiness import wait_for_schema

    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"  # never migrated
    caplog.set_level(logging.INFO, logger="workers.readiness")
    waiter = threading.Thread(target=wait_for_schema, args=(url, 0.01, 3600.0))
    waiter.start()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "workers.readiness"]

    wait_until(lines, timeout=30, interval=0.05, what="the first line")
    upgrade(url)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert lines() == [
        f"database has no schema yet (this version's is {HEAD}): "
        "run `cxr-node db upgrade` (serve does it on start); waiting",
        f"database schema {HEAD} is this version's: starting",
    ]
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ConfigurationError, match="newer than this version's"):
        wait_for_schema(url, 0.01)
