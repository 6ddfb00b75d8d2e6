"""Loop protection: our own outputs, routed back by the PACS, are stored and never analysed."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from node.db.audit import events
from node.dicom.sc import build_sc
from node.dicom.uids import derive_uid
from node.routing import decide
from node.service import Node
from tests.helpers import c_store, make_dx, new_uid, queued_messages
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_result


def _dx_from_our_sc(cr_chest: Path) -> Dataset:
    """A DX that a PACS made from our SC: our derived UID, foreign Manufacturer."""
    ds = make_dx(cr_chest)
    source = Dataset()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ds.SOPClassUID, new_uid()
    ds.SourceImageSequence = [source]
    ds.SoftwareVersions = ALGORITHM_VERSION
    ds.SOPInstanceUID = derive_uid(source.ReferencedSOPInstanceUID, "sc", ALGORITHM_VERSION)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _dx_with_our_equipment(cr_chest: Path) -> Dataset:
    ds = make_dx(cr_chest)
    item = Dataset()
    item.Manufacturer = "CXR Node"
    ds.ContributingEquipmentSequence = [item]
    return ds


def test_own_images_sent_back_are_stored_not_analysed(running_node: Node, cr_chest: Path) -> None:
    _, port = running_node.address
    for ds in (_dx_from_our_sc(cr_chest), _dx_with_our_equipment(cr_chest)):
        assert c_store(port, ds) == 0x0000
        uid = str(ds.SOPInstanceUID)
        assert running_node.ingest.spool.contains(uid)
        [ineligible] = events(sop_instance_uid=uid, kind="instance.ineligible")
        assert "made by this node" in ineligible.message
    assert queued_messages(running_node.settings) == []
    control = make_dx(cr_chest)  # the same image without our marks is analysed
    assert c_store(port, control) == 0x0000
    assert [m["kwargs"]["sop_instance_uid"] for m in queued_messages(running_node.settings)] == [
        control.SOPInstanceUID
    ]


def test_our_sc_through_ingest_is_not_analysed(running_node: Node, cr_chest: Path) -> None:
    source = make_dx(cr_chest)
    sc = build_sc(source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION)
    buffer = DicomBytesIO()
    dcmwrite(buffer, sc, enforce_file_format=True)
    result = running_node.ingest.receive(buffer.getvalue())
    assert result.eligible is False and result.queued is False
    assert "SOP Instance UID is the node's sc UID" in str(result.reason)
    assert "made by this node" in events(sop_instance_uid=sc.SOPInstanceUID)[-1].message
    # The same SC with its Manufacturer rewritten is still recognised by its UIDs.
    sc.Manufacturer = "PACS"
    del sc.ContributingEquipmentSequence
    assert "sc UID" in str(decide(sc).reason)
