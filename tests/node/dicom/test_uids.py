"""Deterministic output UIDs (node.dicom.uids)."""

from __future__ import annotations

import copy
import re
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset

from node.dicom.exceptions import UIDError
from node.dicom.uids import derive_series_uid, derive_uid, instance_number, series_number

SOURCE = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234567"
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")


def test_same_inputs_same_uid() -> None:
    assert derive_uid(SOURCE, "sr", "1.0") == derive_uid(SOURCE, "sr", "1.0")
    assert derive_series_uid("1.2.3", "sc", "1.0") == derive_series_uid("1.2.3", "sc", "1.0")


@pytest.mark.parametrize(
    ("other", "why"),
    [
        ((SOURCE, "sc", "1.0"), "kind"),
        ((SOURCE, "sr", "1.1"), "model version"),
        ((SOURCE + "1", "sr", "1.0"), "source"),
    ],
)
def test_any_input_changes_uid(other: tuple[str, str, str], why: str) -> None:
    assert derive_uid(*other) != derive_uid(SOURCE, "sr", "1.0"), why


def test_series_differs_from_instance_and_by_kind() -> None:
    study = "1.2.3.4"
    assert derive_series_uid(study, "sr", "1") != derive_series_uid(study, "sc", "1")
    assert derive_series_uid(study, "sr", "1") != derive_series_uid(study, "sr", "2")
    assert derive_series_uid(study, "sr", "1") != derive_uid(study, "sr", "1")


def test_uid_is_valid_ui() -> None:
    uid = derive_uid(SOURCE, "seg", "2024.01.01-long-version-string")
    assert len(uid) <= 64  # PS3.5 6.2
    assert UID_RE.match(uid), uid


@pytest.mark.parametrize("args", [("", "sr", "1"), (SOURCE, "", "1"), (SOURCE, "sr", "")])
def test_empty_input_is_an_error(args: tuple[str, str, str]) -> None:
    with pytest.raises(UIDError):
        derive_uid(*args)


def test_series_numbers_distinct_and_unknown_kind_rejected() -> None:
    assert len({series_number(kind) for kind in ("sr", "sc", "seg")}) == 3
    with pytest.raises(UIDError, match="kind"):
        series_number("pr")


def test_films_of_one_study_get_their_own_instance_numbers(dx_source: Dataset) -> None:
    """Outputs of one kind share a series per study; two films of the study each gave Instance
    Number 1 in it (the PACS's order arbitrary). Now numbered from the films' own numbering."""
    from node.dicom.outputs import build_outputs
    from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result

    numbers: dict[str, list[int]] = {}
    series_uids: dict[str, set[str]] = {}
    for series, instance in ((1, 1), (2, 1), (2, 2)):
        source = copy.deepcopy(dx_source)
        source.SeriesNumber, source.InstanceNumber = series, instance
        source.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{series}{instance}"
        outputs = build_outputs(source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION)
        for kind, ds in outputs.items():
            numbers.setdefault(kind, []).append(int(ds.InstanceNumber))
            series_uids.setdefault(kind, set()).add(str(ds.SeriesInstanceUID))
    assert all(len(uids) == 1 for uids in series_uids.values())  # one series per kind and study
    for kind, got in numbers.items():
        assert got == [1001, 2001, 2002], kind
    bare = Dataset()
    assert instance_number(bare) == 1
    bare.InstanceNumber = "7"
    assert instance_number(bare) == 7
    # as read from a file with raw values pydicom keeps as given: "inf" raised OverflowError
    # and no output was made; an empty (Type 2) Instance Number gave every film 1
    assert instance_number(SimpleNamespace(SeriesNumber="3", InstanceNumber="inf")) == 3000
    assert instance_number(SimpleNamespace(SeriesNumber=3, InstanceNumber="")) == 3000
