"""Export presentation contexts: what is proposed, what a peer that accepts less gets.

Every SCP supports Implicit VR Little Endian (PS3.5 10.1); a PACS that accepts
only that still gets the JPEG-LS heatmap SC, decompressed. A peer that accepts
the association but none of its contexts (PS3.8 9.3.3.2) is named as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE

from node.db.audit import events
from node.db.engine import upgrade
from node.dicom.outputs import build_outputs
from node.exceptions import SendError
from node.export import OutputFile, add_to_outbox, deliver_due, outbox_rows
from node.scu import _as_accepted, _contexts, send_datasets
from node.settings import Destination, configure
from tests.node.dicom.fakes import ALGORITHM_NAME, ALGORITHM_VERSION, make_dx, make_result
from tests.orthanc import Orthanc


@pytest.fixture(scope="module")
def outputs() -> dict[str, Dataset]:
    """SR, SEG and the SC as ``CXR_NODE_SC_COMPRESSION=jpeg-ls`` makes it (JPEG-LS Lossless)."""
    source = make_dx()
    built = build_outputs(
        source, make_result(source), ALGORITHM_NAME, ALGORITHM_VERSION, sc_transfer_syntax_uid=JPEGLSLossless
    )
    assert built["sc"].file_meta.TransferSyntaxUID == JPEGLSLossless
    return built


@pytest.fixture
def implicit_only_orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A PACS that accepts Implicit VR Little Endian only."""
    server = Orthanc(
        tmp_path / "orthanc", extra_config={"AcceptedTransferSyntaxes": [ImplicitVRLittleEndian]}
    ).start()
    yield server
    server.stop()


@pytest.fixture
def jpeg_2000_sc_peer() -> Iterator[Destination]:
    """A pynetdicom SCP that stores Secondary Capture in JPEG 2000 Lossless only, nothing else."""
    ae = AE(ae_title="PEER")
    ae.add_supported_context(SecondaryCaptureImageStorage, JPEG2000Lossless)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    yield Destination.parse(f"PEER@127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def _outbox(outputs: dict[str, Dataset], kinds: tuple[str, ...], tmp_path: Path) -> list[OutputFile]:
    files = []
    for kind in kinds:
        ds = outputs[kind]
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(OutputFile(kind, path, ds.SOPInstanceUID, ds.StudyInstanceUID, "1.2.3.4"))
    return files


def test_compressed_output_also_proposes_both_little_endian_syntaxes(outputs: dict[str, Dataset]) -> None:
    assert dict(_contexts([outputs["sc"]])) == {
        SecondaryCaptureImageStorage: [JPEGLSLossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    }


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param(("sr", "sc", "seg"), id="beside-sr-and-seg"),
        # Alone (a retry), the SC's was the association's only context: refused, it was aborted.
        pytest.param(("sc",), id="alone"),
    ],
)
def test_jpeg_ls_sc_reaches_a_pacs_of_implicit_vr_only(
    node_config,  # type: ignore[no-untyped-def]
    implicit_only_orthanc: Orthanc,
    outputs: dict[str, Dataset],
    kinds: tuple[str, ...],
    tmp_path: Path,
) -> None:
    settings = configure(destinations=[f"ORTHANC@127.0.0.1:{implicit_only_orthanc.dicom_port}"])
    upgrade()
    add_to_outbox(_outbox(outputs, kinds, tmp_path), settings)
    assert deliver_due(settings) == {"sent": len(kinds)}, [r.last_error for r in outbox_rows()]
    sc = outputs["sc"]
    instances = implicit_only_orthanc.study_instances(sc.StudyInstanceUID)
    stored = {i["sop_instance_uid"]: i["id"] for i in instances}
    assert sorted(stored) == sorted(outputs[kind].SOPInstanceUID for kind in kinds)
    received = dcmread(BytesIO(implicit_only_orthanc.file(stored[sc.SOPInstanceUID])))
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    # The same instance, its pixels bit-exact (JPEG-LS Lossless), its pixel module consistent.
    for keyword in ("SOPInstanceUID", "PhotometricInterpretation", "SamplesPerPixel", "Rows", "Columns"):
        assert received[keyword].value == sc[keyword].value, keyword
    assert (received.BitsAllocated, received.PlanarConfiguration) == (8, 0)
    assert len(received.PixelData) == sc.Rows * sc.Columns * 3
    assert np.array_equal(received.pixel_array, sc.pixel_array)
    # The file in the outbox is left as written.
    assert dcmread(tmp_path / "sc.dcm").file_meta.TransferSyntaxUID == JPEGLSLossless


def test_decompressed_copy_leaves_the_data_set_alone(outputs: dict[str, Dataset]) -> None:
    sc = outputs["sc"]
    compressed = bytes(sc.PixelData)
    plain = _as_accepted(sc, [ImplicitVRLittleEndian])
    assert plain is not None and plain is not sc
    assert plain.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert len(plain.PixelData) == sc.Rows * sc.Columns * 3 != len(compressed)
    assert sc.file_meta.TransferSyntaxUID == JPEGLSLossless and bytes(sc.PixelData) == compressed
    assert _as_accepted(sc, [JPEGLSLossless]) is sc
    assert _as_accepted(sc, [JPEG2000Lossless]) is None  # no conversion between compressed syntaxes


def test_every_context_refused_is_named_not_a_network_fault(
    jpeg_2000_sc_peer: Destination, outputs: dict[str, Dataset]
) -> None:
    with pytest.raises(SendError) as raised:
        send_datasets([outputs["sr"], outputs["sc"]], jpeg_2000_sc_peer)
    assert str(raised.value) == (
        "PEER accepted no presentation context for "
        "Comprehensive SR Storage in Explicit VR Little Endian / Implicit VR Little Endian "
        "(SOP class not supported); "
        "Secondary Capture Image Storage in JPEG-LS Lossless Image Compression / "
        "Explicit VR Little Endian / Implicit VR Little Endian (transfer syntaxes not supported)"
    )


def test_export_audit_names_the_refused_context(
    node_config,  # type: ignore[no-untyped-def]
    jpeg_2000_sc_peer: Destination,
    outputs: dict[str, Dataset],
    tmp_path: Path,
) -> None:
    settings = configure(destinations=[str(jpeg_2000_sc_peer)])
    upgrade()
    add_to_outbox(_outbox(outputs, ("sc",), tmp_path), settings)
    assert deliver_due(settings) == {"failed": 1}
    [failed] = events(kind="export.failed")
    assert "PEER accepted no presentation context for Secondary Capture Image Storage in " in failed.message
    assert "aborted or unreachable" not in failed.message
    assert "PEER accepted no presentation context" in (outbox_rows()[0].last_error or "")
