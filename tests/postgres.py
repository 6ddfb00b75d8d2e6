"""A private PostgreSQL cluster for one test, which it may stop, crash and restart.

The shared server on 5432 is never touched: ``initdb`` into a temporary
directory as the ``postgres`` user (``runuser``), trust auth on loopback, a
free port and a socket directory of its own.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.helpers import free_port


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        pytest.fail(f"{tool} missing: apt-get install postgresql")
    return found[-1]


class PrivatePostgres:
    """One cluster; ``url`` names its database ``cxr``."""

    def __init__(self) -> None:
        if shutil.which("runuser") is None:
            pytest.fail("runuser missing (util-linux)")
        # Under /tmp, not pytest's tmp_path: the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="cxr-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o700)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/cxr"

    def _as_postgres(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {done.stdout}{done.stderr}")
        return done

    def init(self) -> PrivatePostgres:
        self._as_postgres(
            _pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()
        self._as_postgres(
            _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "cxr"
        )
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: a crash (recovery from WAL on start)."""
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            ["runuser", "-u", "postgres", "--", _pg_bin("pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        return status.returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
