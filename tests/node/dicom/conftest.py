"""Fixtures for the DICOM output tests (see fakes.py for how data is made)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.outputs import build_outputs
from tests.helpers import dciodvfy_errors
from tests.node.dicom.fakes import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    make_dx,
    make_result,
    read_cr,
)


@pytest.fixture(scope="session")
def cr_source() -> Dataset:
    return read_cr("RG1_UNCI.dcm")


@pytest.fixture(scope="session")
def cr_j2k_source() -> Dataset:
    return read_cr("RG1_J2KR.dcm")


@pytest.fixture(scope="session")
def dx_source() -> Dataset:
    return make_dx()


@pytest.fixture(scope="session", params=["cr", "cr_j2k", "dx"])
def any_source(request: pytest.FixtureRequest) -> Dataset:
    return request.getfixturevalue(f"{request.param}_source")


@pytest.fixture(scope="session")
def result(any_source: Dataset) -> AnalysisResult:
    return make_result(any_source)


@pytest.fixture(scope="session")
def outputs(any_source: Dataset, result: AnalysisResult) -> dict[str, Dataset]:
    """SR, SC and SEG of each source, built once per session."""
    return build_outputs(any_source, result, ALGORITHM_NAME, ALGORITHM_VERSION)


@pytest.fixture
def validate(tmp_path: Path) -> Callable[[Dataset, str], list[str]]:
    def _validate(ds: Dataset, name: str) -> list[str]:
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return dciodvfy_errors(path)

    return _validate
