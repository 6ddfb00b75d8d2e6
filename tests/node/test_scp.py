"""The SCP on a real loopback port, driven by dcmtk (a real modality) and pynetdicom."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.db.audit import events
from node.scu import send_datasets
from node.service import Node
from node.settings import Destination, configure
from tests.helpers import (
    dcmtk,
    encoded,
    make_dx,
    queued_messages,
    run,
    storescu,
    wait_until,
    with_new_uids,
    write,
)


def kinds(**filters: str) -> list[str]:
    return [e.kind for e in events(**filters)]


def test_echoscu(running_node: Node) -> None:
    _, port = running_node.address
    result = run([dcmtk("echoscu"), "-aet", "MODALITY", "-aec", "CXRNODE", "127.0.0.1", str(port)])
    assert result.returncode == 0, result.stderr
    assert "echo" in kinds()
    accepted = [e for e in events(kind="association.accepted")]
    assert accepted and accepted[-1].calling_ae == "MODALITY"


def test_storescu_cr_chest_is_spooled_audited_and_queued(running_node: Node, cr_chest: Path) -> None:
    _, port = running_node.address
    done = storescu(port, cr_chest)
    assert done.returncode == 0, done.stderr
    sop_instance_uid = str(dcmread(cr_chest, stop_before_pixels=True).SOPInstanceUID)
    stored = running_node.ingest.spool.path_for(sop_instance_uid)
    assert stored.is_file()
    assert dcmread(stored).pixel_array.shape == (1955, 1841)  # the whole image arrived
    assert kinds(sop_instance_uid=sop_instance_uid) == ["instance.received", "job.queued"]
    messages = queued_messages(running_node.settings)
    assert [m["kwargs"] for m in messages] == [{"sop_instance_uid": sop_instance_uid, "path": str(stored)}]
    assert messages[0]["task"] == "cxr_node.analyze_instance"


def test_storescu_jpeg2000(running_node: Node, cr_chest_j2k: Path, tmp_path: Path) -> None:
    _, port = running_node.address
    ds = with_new_uids(dcmread(cr_chest_j2k))
    # -xv: propose JPEG 2000 lossless, as a modality sending compressed images does
    done = storescu(port, write(ds, tmp_path / "j2k.dcm"), options=("-xv",))
    assert done.returncode == 0, done.stderr
    stored = dcmread(running_node.ingest.spool.path_for(ds.SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID  # kept as sent
    assert stored.pixel_array.shape == (1955, 1841)  # and decodable
    assert "job.queued" in kinds(sop_instance_uid=ds.SOPInstanceUID)


def test_dx_for_presentation_via_pynetdicom(running_node: Node, cr_chest: Path) -> None:
    host, port = running_node.address
    ds = make_dx(cr_chest)
    results = send_datasets([ds], Destination("CXRNODE", host, port), "MODALITY")
    assert [r.status for r in results] == [0x0000]
    assert "job.queued" in kinds(sop_instance_uid=ds.SOPInstanceUID)


def test_rle_compressed_dx_is_accepted(running_node: Node, cr_chest: Path) -> None:
    host, port = running_node.address
    ds = make_dx(cr_chest)
    ds.compress(RLELossless)
    results = send_datasets([ds], Destination("CXRNODE", host, port), "MODALITY")
    assert [r.status for r in results] == [0x0000]


def test_ct_is_refused_at_negotiation(running_node: Node) -> None:
    host, port = running_node.address
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title="CXRNODE")
    try:
        assert assoc.is_established
        ct = [c for c in assoc.rejected_contexts if c.abstract_syntax == CTImageStorage]
        assert ct, "CT Image Storage must be rejected"
        assert all(c.abstract_syntax != CTImageStorage for c in assoc.accepted_contexts)
    finally:
        assoc.release()


def test_a_modality_that_aborts_over_a_refused_context_is_audited_as_such(running_node: Node) -> None:
    """dcmtk's storescu with a CT file: the CT context refused, it aborts; the audit said only "a
    data set in transfer was not stored", as if something had been lost, and nothing of the CT."""
    from pydicom.data import get_testdata_file

    _, port = running_node.address
    assert storescu(port, Path(get_testdata_file("CT_small.dcm"))).returncode != 0
    aborted = wait_until(lambda: events(kind="association.aborted"), timeout=30, interval=0.1)
    assert (
        "refused at negotiation: " in aborted[-1].message and "SOP class not supported" in aborted[-1].message
    )
    assert aborted[-1].message.endswith(" more (the node takes CR and DX images)")


def test_storescu_ct_file_fails(running_node: Node, tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    _, port = running_node.address
    done = storescu(port, Path(get_testdata_file("CT_small.dcm")))
    assert done.returncode != 0
    assert "presentation context" in (done.stdout + done.stderr).lower()
    assert list(running_node.ingest.spool.instances_dir.iterdir()) == []


def test_unknown_calling_ae_is_rejected_and_audited(node_config, cr_chest: Path) -> None:
    settings = configure(allowed_calling_aets=["MODALITY"])
    node = Node(settings)
    _, port = node.start()
    try:
        bad = run([dcmtk("echoscu"), "-aet", "INTRUDER", "-aec", "CXRNODE", "127.0.0.1", str(port)])
        assert bad.returncode != 0
        # The handler's audit row may land a moment after echoscu has exited: poll.
        rejected = wait_until(lambda: events(kind="association.rejected"), timeout=30, interval=0.1)
        assert rejected[-1].calling_ae == "INTRUDER"
        assert "not allowed" in rejected[-1].message
        good = run([dcmtk("echoscu"), "-aet", "MODALITY", "-aec", "CXRNODE", "127.0.0.1", str(port)])
        assert good.returncode == 0, good.stderr
    finally:
        node.stop()


def test_wrong_called_ae_is_rejected(running_node: Node) -> None:
    _, port = running_node.address
    result = run([dcmtk("echoscu"), "-aet", "MODALITY", "-aec", "SOMEONE", "127.0.0.1", str(port)])
    assert result.returncode != 0
    rejected = wait_until(lambda: events(kind="association.rejected"), timeout=30, interval=0.1)
    # the AE title the modality called (the reject's own, pynetdicom's "DEFAULT", was audited)
    assert "called AE title 'SOMEONE' is not 'CXRNODE'" in rejected[-1].message


def test_the_association_limit_is_audited_as_such(node_config) -> None:  # type: ignore[no-untyped-def]
    """Beyond ``max_associations`` the node answers A-ASSOCIATE-RJ local-limit-exceeded; the
    audit said "called AE title 'DEFAULT' is not 'CXRNODE'" and sent admins after AE titles."""
    node = Node(configure(max_associations=1))
    _, port = node.start()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    held = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    try:
        assert held.is_established
        second = run([dcmtk("echoscu"), "-aet", "MODALITY", "-aec", "CXRNODE", "127.0.0.1", str(port)])
        assert second.returncode != 0
        rejected = wait_until(lambda: events(kind="association.rejected"), timeout=30, interval=0.1)
        assert rejected[-1].message == "too many associations at once (at most 1)"
        assert rejected[-1].calling_ae == "MODALITY"
    finally:
        held.release()
        node.stop()


def test_duplicate_is_audited_not_stored_twice(running_node: Node, cr_chest: Path) -> None:
    _, port = running_node.address
    assert storescu(port, cr_chest).returncode == 0
    assert storescu(port, cr_chest).returncode == 0  # the modality gets success both times
    uid = str(dcmread(cr_chest, stop_before_pixels=True).SOPInstanceUID)
    assert kinds(sop_instance_uid=uid) == ["instance.received", "job.queued", "instance.duplicate"]
    assert len(list(running_node.ingest.spool.instances_dir.iterdir())) == 1
    assert len(queued_messages(running_node.settings)) == 1


def test_a_copy_with_other_content_is_kept_aside(running_node: Node, cr_chest: Path, tmp_path: Path) -> None:
    """A resend under the same SOP Instance UID with other content (corrected at the modality):
    the modality gets success, the first copy stays the one analysed, and the second is kept in
    spool/conflicts, once however often it comes (it was dropped: nothing received is lost)."""
    _, port = running_node.address
    first = dcmread(cr_chest)
    second = dcmread(cr_chest)
    second.PatientName = "Corrected^Name"
    for ds, name in ((first, "first.dcm"), (second, "second.dcm"), (second, "again.dcm")):
        assert storescu(port, write(ds, tmp_path / name)).returncode == 0
    uid = str(first.SOPInstanceUID)
    assert kinds(sop_instance_uid=uid) == [
        "instance.received",
        "job.queued",
        "instance.duplicate",
        "instance.duplicate",
    ]
    duplicate = events(kind="instance.duplicate", sop_instance_uid=uid)[-1]
    assert "other content" in duplicate.message and "Corrected" not in duplicate.message
    spool = running_node.ingest.spool
    assert dcmread(spool.path_for(uid)).PatientName == first.PatientName
    (kept,) = spool.conflicts_dir.iterdir()
    assert kept.name.startswith(uid) and dcmread(kept).PatientName == "Corrected^Name"
    assert len(queued_messages(running_node.settings)) == 1


def test_the_same_data_set_under_another_file_meta_is_no_conflict(cr_chest: Path, tmp_path: Path) -> None:
    """A resend after a pynetdicom upgrade (another Implementation Version Name in the file meta)
    or forwarded in Implicit VR is the same data set: not kept again (each was a 7 MB
    "other content" copy); a changed element is."""
    from io import BytesIO

    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom.dsutils import create_file_meta, encode

    from node.ingest import other_data_set

    ds = dcmread(cr_chest)

    def received(version: str, syntax: str = ExplicitVRLittleEndian) -> bytes:
        meta = create_file_meta(
            sop_class_uid=ds.SOPClassUID,
            sop_instance_uid=ds.SOPInstanceUID,
            transfer_syntax=syntax,
            implementation_version=version,
        )
        out = BytesIO()
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(out, meta)
        out.write(encode(ds, syntax == ImplicitVRLittleEndian, True))
        return out.getvalue()

    stored = tmp_path / "stored.dcm"
    stored.write_bytes(received("PYNETDICOM_215"))
    assert other_data_set(stored, stored.read_bytes()) is None
    assert other_data_set(stored, received("PYNETDICOM_304")) is None
    assert other_data_set(stored, received("PYNETDICOM_215", ImplicitVRLittleEndian)) is None
    ds.PatientName = "Corrected^Name"
    assert other_data_set(stored, received("PYNETDICOM_215")) == "with other content"


def test_lateral_view_is_stored_not_queued(running_node: Node, cr_chest: Path) -> None:
    host, port = running_node.address
    ds = make_dx(cr_chest, view="LL")
    assert [r.status for r in send_datasets([ds], Destination("CXRNODE", host, port), "M")] == [0]
    assert running_node.ingest.spool.contains(ds.SOPInstanceUID)
    assert kinds(sop_instance_uid=ds.SOPInstanceUID) == ["instance.received", "instance.ineligible"]
    assert "not frontal" in events(kind="instance.ineligible")[-1].message
    assert queued_messages(running_node.settings) == []


def test_child_is_stored_not_queued(running_node: Node, cr_chest: Path) -> None:
    host, port = running_node.address
    ds = make_dx(cr_chest, age="009Y")
    assert [r.status for r in send_datasets([ds], Destination("CXRNODE", host, port), "M")] == [0]
    assert "instance.ineligible" in kinds(sop_instance_uid=ds.SOPInstanceUID)
    assert queued_messages(running_node.settings) == []


def test_missing_pixel_data_is_a900_and_kept(running_node: Node, cr_chest: Path) -> None:
    """An image without Pixel Data does not match its SOP Class (PS3.4 B.2.3: 0xA900; an SR or
    a PDF sent as a radiograph answered 0xC210, 'cannot understand')."""
    host, port = running_node.address
    ds = make_dx(cr_chest)
    del ds.PixelData
    results = send_datasets([ds], Destination("CXRNODE", host, port), "MODALITY")
    assert [r.status for r in results] == [0xA900]
    rejected = events(kind="instance.rejected")[-1]
    assert "Pixel Data (7FE0,0010) is missing" in rejected.message
    assert len(list(running_node.ingest.spool.rejected_dir.iterdir())) == 1  # nothing lost
    assert not running_node.ingest.spool.contains(ds.SOPInstanceUID)
    echo = run([dcmtk("echoscu"), "-aec", "CXRNODE", "127.0.0.1", str(port)])
    assert echo.returncode == 0


def test_another_sop_class_than_the_requests_does_not_match(node_config, cr_chest: Path) -> None:
    """A data set whose SOP Class UID is not the request's Affected SOP Class UID (PS3.4 B.2.3:
    0xA900 at the SCP), refused before anything is stored."""
    from node.exceptions import DatasetMismatchError
    from node.ingest import Ingest

    ingest = Ingest(node_config)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    with pytest.raises(DatasetMismatchError, match="differs from the request's Affected SOP Class UID"):
        ingest.receive(encoded(ds), affected_sop_class_uid=CTImageStorage)
    assert not ingest.spool.contains(ds.SOPInstanceUID)


def test_spool_below_reserve_is_a700(node_config, cr_chest: Path) -> None:
    settings = configure(min_free_bytes=1 << 62)  # more than any disk: always "full"
    node = Node(settings)
    _, port = node.start()
    try:
        done = storescu(port, cr_chest, options=("-v",))
        assert "Refused: OutOfResources" in done.stdout + done.stderr, done.stderr
        rejected = events(kind="instance.rejected")[-1]
        assert rejected.message.startswith("status 0xA700")
        assert list(node.ingest.spool.instances_dir.iterdir()) == []
    finally:
        node.stop()


@pytest.fixture
def inode_starved_spool(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A tmpfs with room for the spool's folders and no more files: a real ENOSPC
    that free-space checks cannot see coming (needs root and mount, as on CI)."""
    import subprocess

    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=4", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_is_a700_then_recovers(node_config, cr_chest: Path, inode_starved_spool: Path) -> None:
    import subprocess

    settings = configure(spool_dir=inode_starved_spool, min_free_bytes=0)
    node = Node(settings)
    host, port = node.start()
    destination = Destination("CXRNODE", host, port)
    try:
        ds = make_dx(cr_chest)
        assert [r.status for r in send_datasets([ds], destination, "MODALITY")] == [0xA700]
        assert "No space left on device" in events(kind="instance.rejected")[-1].message
        assert run([dcmtk("echoscu"), "-aec", "CXRNODE", "127.0.0.1", str(port)]).returncode == 0
        # Space returns: the modality's retry of the same instance succeeds.
        subprocess.run(["mount", "-o", "remount,nr_inodes=1000", str(inode_starved_spool)], check=True)
        assert [r.status for r in send_datasets([ds], destination, "MODALITY")] == [0x0000]
        assert node.ingest.spool.contains(ds.SOPInstanceUID)
        assert list(node.ingest.spool.tmp_dir.iterdir()) == []  # no partial file left
    finally:
        node.stop()
