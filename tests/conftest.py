"""Shared fixtures: real DICOM files, isolated settings, a running node, real servers."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import settings as node_settings
from node.db.engine import dispose_engines
from tests.helpers import pydicom_data_file

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
POSTGRES_ADMIN_URL = os.environ.get(
    "CXR_NODE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CXR_NODE_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def cr_chest() -> Path:
    """A real CR chest PA, MONOCHROME1, Explicit VR Little Endian (pydicom-data RG1_UNCR)."""
    return pydicom_data_file("RG1_UNCR.dcm")


@pytest.fixture(scope="session")
def cr_chest_j2k() -> Path:
    """The same CR chest as JPEG 2000 lossless (pydicom-data RG1_J2KR)."""
    return pydicom_data_file("RG1_J2KR.dcm")


@pytest.fixture(scope="session")
def cr_extremity() -> Path:
    return pydicom_data_file("RG3_UNCR.dcm")


@pytest.fixture
def node_config(tmp_path: Path) -> Iterator[node_settings.Settings]:
    """Settings isolated in tmp_path: SQLite, embedded broker, any free port, no worker."""
    node_settings.reset()
    settings = node_settings.configure(
        home=tmp_path / "home",
        host="127.0.0.1",
        port=0,
        embedded_worker=False,
        min_free_bytes=0,
        sweep_interval_seconds=3600,
        metrics_port=0,
    )
    yield settings
    node_settings.reset()
    dispose_engines()


@pytest.fixture
def running_node(node_config):  # type: ignore[no-untyped-def]
    from node.service import Node

    node = Node(node_config)
    node.start()
    yield node
    node.stop()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _port_open("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (the test script starts it)")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"cxr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    yield url
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database number of its own, flushed after the test."""
    import redis

    if not _port_open("127.0.0.1", 6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (the test script starts it)")
    db = 1 + uuid.uuid4().int % 14
    url = f"{REDIS_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip("../shared/data is not beside the checkout")
    return SHARED / "data"
