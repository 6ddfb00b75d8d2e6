from __future__ import annotations

from pathlib import Path

import pytest

from tests.orthanc import Orthanc


@pytest.fixture
def orthanc(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = Orthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()
