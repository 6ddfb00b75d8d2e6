"""A corpus of bad and unusual input: each gets a defined status and audit row, never a crash.

After every case the node must still answer C-ECHO.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.db.audit import events
from node.service import Node
from node.settings import configure
from tests.helpers import echo_ok, make_dx, new_uid, queued_messages

SUCCESS, DATASET_MISMATCH, CANNOT_UNDERSTAND = 0x0000, 0xA900, 0xC210


def dx(cr_chest: Path, **attrs: object) -> Dataset:
    ds = make_dx(cr_chest)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def resized(ds: Dataset, rows: int, columns: int) -> Dataset:
    pixels = np.resize(np.frombuffer(ds.PixelData, dtype=np.uint16), (rows, columns))
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def rgb(ds: Dataset) -> Dataset:
    gray = (np.frombuffer(ds.PixelData, dtype=np.uint16).reshape(ds.Rows, ds.Columns) >> 4).astype(np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.repeat(gray[..., None], 3, axis=2).tobytes()
    del ds.WindowCenter, ds.WindowWidth
    return ds


def gray8(cr_chest: Path) -> Dataset:
    """An 8-bit MONOCHROME2 DX (Bits Allocated 8, Stored 8, High Bit 7)."""
    ds = make_dx(cr_chest)
    gray = (np.frombuffer(ds.PixelData, dtype=np.uint16) >> 4).astype(np.uint8)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = gray.tobytes()
    return ds


def monochrome1_from(cr_chest: Path) -> Dataset:
    ds = dcmread(cr_chest)
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encoded(ds: Dataset) -> bytes:
    """The data set as sent in a C-STORE (no file meta), in its transfer syntax."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


@dataclass
class Case:
    name: str
    build: Callable[[Path], Dataset | bytes]
    status: int
    audit: str  # the audit kind the instance must have
    queued: bool = False
    sop_class: str = ComputedRadiographyImageStorage
    names: str = ""  # the attribute a refusal's message must name


def _truncated(cr: Path) -> bytes:
    return encoded(make_dx(cr))[:5000]


def _short_pixels(cr: Path) -> Dataset:
    ds = make_dx(cr)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return ds


def _no_pixels(cr: Path) -> Dataset:
    ds = make_dx(cr)
    del ds.PixelData
    return ds


def _twelve_bit(cr: Path) -> Dataset:
    return make_dx(cr)  # BitsStored 12 in BitsAllocated 16


def _sixteen_bit(cr: Path) -> Dataset:
    return dx(cr, BitsStored=16, HighBit=15)


def _wrong_vr(cr: Path) -> Dataset:
    ds = make_dx(cr)
    # View Position (CS) encoded as US: a wrong VR in a tag routing reads.
    ds[0x00185101] = DataElement(0x00185101, "US", 5)
    return ds


def _zero_rows(cr: Path) -> Dataset:
    return dx(cr, Rows=0)


def _private_tags(cr: Path) -> Dataset:
    ds = make_dx(cr)
    block = ds.private_block(0x0029, "CXR NODE TEST", create=True)
    block.add_new(0x01, "LO", "private value")
    block.add_new(0x02, "OB", b"\x00\x01\x02\x03")
    return ds


def _pixel_module(**attrs: object) -> Callable[[Path], Dataset]:
    """A DX whose Image Pixel module (PS3.3 C.7.6.3) has ``attrs`` instead."""
    return lambda cr: dx(cr, **attrs)


def _thirty_two_bit(cr: Path) -> Dataset:
    ds = make_dx(cr)
    ds.PixelData = np.frombuffer(ds.PixelData, dtype=np.uint16).astype(np.uint32).tobytes()
    ds.BitsAllocated = 32
    return ds


def _two_frames(cr: Path) -> Dataset:
    """The film twice, as a two-frame instance: which frame to read is not the node's guess."""
    ds = make_dx(cr)
    ds.PixelData = ds.PixelData * 2
    ds.NumberOfFrames = 2
    return ds


def _rgb_planar(planar: object) -> Callable[[Path], Dataset]:
    def build(cr: Path) -> Dataset:
        ds = rgb(make_dx(cr))
        ds.PlanarConfiguration = planar
        return ds

    return build


def _refused(name: str, build: Callable[[Path], Dataset], attribute: str) -> Case:
    return Case(name, build, CANNOT_UNDERSTAND, "instance.rejected", names=attribute)


CASES = [
    Case(
        "not DICOM",
        lambda cr: b"GIF89a this is not a DICOM data set" * 40,
        CANNOT_UNDERSTAND,
        "instance.rejected",
    ),
    Case("truncated", _truncated, CANNOT_UNDERSTAND, "instance.rejected"),
    Case("no pixel data", _no_pixels, DATASET_MISMATCH, "instance.rejected"),
    Case("pixel data too short", _short_pixels, CANNOT_UNDERSTAND, "instance.rejected"),
    Case("zero rows", _zero_rows, CANNOT_UNDERSTAND, "instance.rejected"),
    Case("1 pixel", lambda cr: resized(make_dx(cr), 1, 1), SUCCESS, "instance.ineligible"),
    Case("8000x8000", lambda cr: resized(make_dx(cr), 8000, 8000), SUCCESS, "job.queued", queued=True),
    Case("RGB", lambda cr: rgb(make_dx(cr)), SUCCESS, "instance.ineligible"),
    Case("16-bit", _sixteen_bit, SUCCESS, "job.queued", queued=True),
    Case("12 bits in 16", _twelve_bit, SUCCESS, "job.queued", queued=True),
    Case("MONOCHROME1", monochrome1_from, SUCCESS, "job.queued", queued=True),
    Case("wrong VR", _wrong_vr, SUCCESS, "instance.ineligible"),
    Case("bad age value", lambda cr: dx(cr, PatientAge="XYZ"), SUCCESS, "job.queued", queued=True),
    Case("private tags", _private_tags, SUCCESS, "job.queued", queued=True),
    Case("non-chest body part", lambda cr: dx(cr, BodyPartExamined="SKULL"), SUCCESS, "instance.ineligible"),
    Case("lateral view", lambda cr: dx(cr, ViewPosition="LL"), SUCCESS, "instance.ineligible"),
    Case("patient aged 9", lambda cr: dx(cr, PatientAge="009Y"), SUCCESS, "instance.ineligible"),
    # The Image Pixel module (PS3.3 C.7.6.3) contradicting itself: refused, attribute named.
    _refused("bits stored 40 of 16", _pixel_module(BitsStored=40, HighBit=39), "Bits Stored (0028,0101)"),
    _refused("bits stored 0", _pixel_module(BitsStored=0, HighBit=0), "Bits Stored (0028,0101)"),
    _refused("high bit 15 for 12 stored", _pixel_module(HighBit=15), "High Bit (0028,0102)"),
    _refused("high bit missing", _pixel_module(HighBit=None), "High Bit (0028,0102)"),
    _refused("bits allocated 12", _pixel_module(BitsAllocated=12), "Bits Allocated (0028,0100)"),
    _refused(
        "pixel representation 2", _pixel_module(PixelRepresentation=2), "Pixel Representation (0028,0103)"
    ),
    _refused("3 samples, MONOCHROME2", _pixel_module(SamplesPerPixel=3), "Samples Per Pixel (0028,0002)"),
    _refused(
        "RGB with 1 sample",
        _pixel_module(PhotometricInterpretation="RGB"),
        "Samples Per Pixel (0028,0002)",
    ),
    _refused(
        "unknown photometric",
        _pixel_module(PhotometricInterpretation="GREYSCALE"),
        "Photometric Interpretation (0028,0004)",
    ),
    _refused("RGB planar 2", _rgb_planar(2), "Planar Configuration (0028,0006)"),
    # Type 1 UIDs the results need to go back into the film's study (was: stored, then the job
    # failed with an AttributeError where the patient had earlier films).
    _refused("no study UID", _pixel_module(StudyInstanceUID=None), "Study Instance UID (0020,000D)"),
    _refused(
        "series UID not a UID", _pixel_module(SeriesInstanceUID="1.2.abc"), "Series Instance UID (0020,000E)"
    ),
    # Consistent, decodable, but not what CR/DX (PS3.3 C.8.11.3) and the models take: stored.
    Case("32 bits allocated", _thirty_two_bit, SUCCESS, "instance.ineligible"),
    Case("8 bits", lambda cr: gray8(cr), SUCCESS, "job.queued", queued=True),
    Case("2 frames", _two_frames, SUCCESS, "instance.ineligible"),
]


def _assoc(port: int, *, rle: bool = False) -> object:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    syntaxes = [ExplicitVRLittleEndian, RLELossless, DeflatedExplicitVRLittleEndian]
    ae.add_requested_context(ComputedRadiographyImageStorage, syntaxes)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.1.1", syntaxes)  # DX for presentation
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    assert assoc.is_established
    return assoc


@pytest.fixture(autouse=True)
def _send_files_undecoded(monkeypatch):  # type: ignore[no-untyped-def]
    """pynetdicom then streams a file's bytes after its meta as they are, junk included."""
    from pynetdicom import _config

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def send_raw(
    assoc,
    sop_class: str,
    sop_instance_uid: str,
    payload: bytes,
    folder: Path,  # type: ignore[no-untyped-def]
    syntax: str = ExplicitVRLittleEndian,
) -> int:
    """A C-STORE whose data set is exactly ``payload`` (which may be anything)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = syntax
    path = folder / f"{sop_instance_uid}.dcm"
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)
        fh.write(payload)
    status = assoc.send_c_store(path)
    return int(status.Status) if "Status" in status else -1


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, running_node: Node, cr_chest: Path, tmp_path: Path) -> None:
    _, port = running_node.address
    built = case.build(cr_chest)
    assoc = _assoc(port)
    try:
        if isinstance(built, bytes):
            uid = new_uid()
            status = send_raw(assoc, case.sop_class, uid, built, tmp_path)
        else:
            uid = str(built.SOPInstanceUID)
            status = send_raw(assoc, str(built.SOPClassUID), uid, encoded(built), tmp_path)
    finally:
        assoc.release()
    assert status == case.status, f"0x{status:04X}"
    kinds = [e.kind for e in events(sop_instance_uid=uid)]
    assert case.audit in kinds, kinds
    if case.audit == "instance.rejected":
        rejected = events(kind="instance.rejected")[-1]
        assert rejected.message.startswith(f"status 0x{case.status:04X}")
        assert case.names in rejected.message
        assert len(list(running_node.ingest.spool.rejected_dir.iterdir())) == 1  # kept, not lost
    queued = [m["kwargs"]["sop_instance_uid"] for m in queued_messages(running_node.settings)]
    assert (uid in queued) is case.queued
    assert echo_ok(port)


@pytest.mark.parametrize("syntax", [RLELossless, DeflatedExplicitVRLittleEndian], ids=["RLE", "deflated"])
def test_compressed_syntaxes(syntax: str, running_node: Node, cr_chest: Path) -> None:
    _, port = running_node.address
    ds = make_dx(cr_chest)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, [syntax])  # only this syntax: no fallback
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0
    stored = dcmread(running_node.ingest.spool.path_for(ds.SOPInstanceUID))
    assert stored.file_meta.TransferSyntaxUID == syntax
    assert stored.pixel_array.shape == (ds.Rows, ds.Columns)
    assert ds.SOPInstanceUID in [
        m["kwargs"]["sop_instance_uid"] for m in queued_messages(running_node.settings)
    ]


def test_refused_sop_class(running_node: Node) -> None:
    _, port = running_node.address
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    assert not assoc.is_established or not assoc.accepted_contexts
    if assoc.is_established:
        assoc.release()
    assert echo_ok(port)


def test_abort_mid_transfer_stores_nothing(node_config, cr_chest: Path, tmp_path: Path) -> None:
    settings = configure(max_pdu=16384)  # many P-DATA fragments per data set
    node = Node(settings)
    _, port = node.start()
    try:
        assoc = _assoc(port)
        ds = make_dx(cr_chest)
        sent = 0
        original = assoc.dul.send_pdu

        class Cut(Exception):
            pass

        def cut_after_three(primitive):  # type: ignore[no-untyped-def]
            nonlocal sent
            if type(primitive).__name__ == "P_DATA":
                sent += 1
                if sent > 3:
                    raise Cut
            original(primitive)

        assoc.dul.send_pdu = cut_after_three
        with pytest.raises(Cut):
            send_raw(assoc, str(ds.SOPClassUID), ds.SOPInstanceUID, encoded(ds), tmp_path)
        assoc.dul.send_pdu = original
        assoc.abort()
        from tests.helpers import wait_until

        wait_until(lambda: events(kind="association.aborted"), timeout=30, what="abort audited")
        assert not node.ingest.spool.contains(ds.SOPInstanceUID)
        assert list(node.ingest.spool.tmp_dir.iterdir()) == []
        assert queued_messages(settings) == []
        assert events(sop_instance_uid=ds.SOPInstanceUID) == []
        assert echo_ok(port)
    finally:
        node.stop()
