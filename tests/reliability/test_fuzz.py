"""A few hundred fuzzed data sets against a running node (``benchmarks/fuzz_ingest.py`` runs 10,000).

Every case is answered (a C-STORE status, or the association refused), the
node stays up, and every instance it acknowledged is in the spool with its
``instance.received`` audit row. The cases are hypothesis-generated from a fixed
seed (``derandomize``), so a failure replays; hypothesis shrinks it to the
smallest mutation list that still fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO

from node.db.audit import events
from node.service import Node
from tests.helpers import c_store, make_dx, with_new_uids
from tests.reliability.fuzzing import (
    Campaign,
    Case,
    FuzzNode,
    accounting,
    cases,
    dataset_ops,
    send,
    wait_analysed,
)

CASES = int(os.environ.get("CXR_NODE_FUZZ_CASES", "250"))


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )


@pytest.mark.timeout(600)
def test_fuzzed_cases_are_answered_and_accounted_for(tmp_path: Path) -> None:
    node = FuzzNode(tmp_path / "node")
    campaign = Campaign(node, tmp_path, storescu_every=50)

    @fuzz_settings(CASES)
    @given(case=cases)
    def one(case: Case) -> None:
        outcome = campaign.run_case(case)
        assert not campaign.crashed, f"node died or hung after {case.describe()}"
        # "not sent": the client could not send it (storescu would not read the file).
        assert outcome.status is not None or outcome.answer.startswith(("refused", "not sent")), (
            f"{outcome.answer} for {case.describe()}"
        )

    try:
        node.start()
        one()
        assert node.alive()
        books = accounting(node.home, campaign.outcomes)
        assert books["lost"] == [] and books["unaudited"] == [], books
        assert books["stored"] > 0  # the campaign is not all refusals
        answers = campaign.table()
        assert sum(n for a, n in answers.items() if a.startswith("0x")) > len(campaign.outcomes) // 2, answers
    finally:
        node.stop()


# Mutations a modality might well send: the instance is stored and analysed.
mild = st.builds(
    Case,
    seed=st.sampled_from(["cr", "dx"]),
    ops=st.lists(
        dataset_ops.filter(lambda op: op[0] in ("nest", "private_blob", "text") and op[1] != "Modality"),
        max_size=2,
    ).map(tuple),
    syntax=st.none(),
    encoding=st.sampled_from(["explicit", "implicit"]),
)


@pytest.mark.timeout(600)
def test_fuzzed_sample_is_analysed_with_the_worker_alive(tmp_path: Path) -> None:
    node = FuzzNode(tmp_path / "node", worker=True)
    campaign = Campaign(node, tmp_path)

    @fuzz_settings(4)
    @given(case=mild)
    def one(case: Case) -> None:
        outcome = campaign.run_case(case)
        assert outcome.status is not None, outcome.answer

    try:
        node.start()
        one()
        # Every eligible stored instance ends analysed or failed with an audit row.
        books = wait_analysed(node.home, campaign.outcomes, timeout=300)
        assert books["lost"] == [] and books["unaudited"] == [], books
        assert books["analysed"] >= 1, books
        assert node.alive() and node.worker_alive()
    finally:
        node.stop()


# Defects the campaign found, replayed as plain cases ------------------------------------------
def test_value_that_does_not_fit_its_vr_is_refused_not_an_internal_error(
    running_node: Node, cr_chest: Path, tmp_path: Path
) -> None:
    """PatientAge's VR changed to FD on the wire: 4 bytes cannot be a 64-bit float. It used to
    be stored and recorded, then routing failed (0x0110) and the sweep failed on it forever."""
    ds = make_dx(cr_chest)
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    assert data.count(b"AS\x04\x00045Y") == 1
    path = tmp_path / "fd.dcm"
    path.write_bytes(data.replace(b"AS\x04\x00045Y", b"FD\x04\x00045Y"))
    answer = send(running_node.address[1], path, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)  # type: ignore[index]
    assert answer == "0xC210"
    assert not running_node.ingest.spool.contains(ds.SOPInstanceUID)
    [refused] = events(kind="instance.rejected", sop_instance_uid=ds.SOPInstanceUID)
    assert "(0010,1010) cannot be decoded" in refused.message
    assert running_node.ingest.sweep() == 0  # nothing left behind for the sweep to choke on


def test_empty_pixel_data_is_refused_not_an_internal_error(running_node: Node, cr_chest: Path) -> None:
    """A zero-length Pixel Data reads as None; the length check used to raise TypeError (0x0110)."""
    ds = make_dx(cr_chest)
    ds.PixelData = b""
    assert c_store(running_node.address[1], ds) == 0xC210  # type: ignore[index]
    [refused] = events(kind="instance.rejected", sop_instance_uid=ds.SOPInstanceUID)
    assert "Pixel Data (7FE0,0010) has 0 bytes" in refused.message


def test_sequence_sent_with_another_vr_is_stored_not_refused_after_storing(
    running_node: Node, cr_chest: Path
) -> None:
    """Contributing Equipment Sequence sent as LO: the loop-protection rule iterated the
    string and raised AttributeError after the instance was stored and recorded (0x0110 for
    a kept instance), and the periodic sweep failed on it every time."""
    ds = make_dx(cr_chest)
    ds.add(DataElement(0x0018A001, "LO", "CXR Node"))  # Contributing Equipment Sequence as LO
    ds.ViewPosition = ""
    ds.add(DataElement(0x00545220, "LO", "LATERAL"))  # View Code Sequence (0054,0220) as LO
    assert c_store(running_node.address[1], ds) == 0x0000  # type: ignore[index]
    assert running_node.ingest.spool.contains(ds.SOPInstanceUID)
    kinds = [e.kind for e in events(sop_instance_uid=ds.SOPInstanceUID)]
    assert "instance.received" in kinds and "instance.rejected" not in kinds
    running_node.ingest.sweep()  # does not raise


def test_routing_failure_keeps_the_instance_and_says_why(
    running_node: Node, cr_chest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever else a header may do to the routing rules, a stored instance is acknowledged,
    kept as not analysed with the reason in the audit, and the sweep goes on past it."""
    from node import routing

    def broken(*args: object, **kwargs: object) -> routing.Decision:
        raise RuntimeError("a rule that did not expect this header")

    monkeypatch.setattr(routing, "decide", broken)
    ds = make_dx(cr_chest)
    assert c_store(running_node.address[1], ds) == 0x0000  # type: ignore[index]
    [ineligible] = events(kind="instance.ineligible", sop_instance_uid=ds.SOPInstanceUID)
    assert "routing rules failed on this header: RuntimeError" in ineligible.message


def test_sop_class_uid_with_a_numeric_vr_is_refused(
    running_node: Node, cr_chest: Path, tmp_path: Path
) -> None:
    """SOP Class UID (0008,0016) with its VR changed to UL: reading it raised
    BytesLengthException, which the header parser did not catch (0x0110). CR's UID is 26
    bytes padded, not a whole number of 4-byte values."""
    ds = with_new_uids(dcmread(cr_chest))
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    start = data.index(b"\x08\x00\x16\x00UI", 132 + 12)  # the data set's, not the file meta's
    path = tmp_path / "ul.dcm"
    path.write_bytes(data[: start + 4] + b"UL" + data[start + 6 :])
    answer = send(running_node.address[1], path, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)  # type: ignore[index]
    assert answer == "0xC210"
    [refused] = events(kind="instance.rejected", sop_instance_uid=ds.SOPInstanceUID)
    assert "cannot be decoded" in refused.message


def test_contributing_equipment_as_a_number_does_not_break_the_routing_rules(
    running_node: Node, cr_chest: Path
) -> None:
    """The same attribute sent as FD (a float is not iterable): the rules answered 'routing
    failed' instead of reading the header; now the instance is routed as any other."""
    ds = make_dx(cr_chest)
    ds.add(DataElement(0x0018A001, "FD", 1.5))
    assert c_store(running_node.address[1], ds) == 0x0000  # type: ignore[index]
    assert events(kind="instance.ineligible", sop_instance_uid=ds.SOPInstanceUID) == []
    assert [e.kind for e in events(kind="job.queued", sop_instance_uid=ds.SOPInstanceUID)] == ["job.queued"]
