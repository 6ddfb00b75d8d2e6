"""Plain helpers for the tests: real DICOM files, data set builders, external tools."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

CLI = [sys.executable, "-m", "node.cli"]


def cli_env(home: Path) -> dict[str, str]:
    """This process's environment without its CXR_NODE_* settings, for a ``cxr-node``
    subprocess of its own home on ports the OS picks. COLUMNS: typer's usage errors come in a
    box as wide as this; a long path wraps in a narrow one."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    return {
        **clean,
        "COLUMNS": "400",
        "CXR_NODE_HOME": str(home),
        "CXR_NODE_PORT": "0",
        "CXR_NODE_METRICS_PORT": "0",
    }


def schema_revisions() -> tuple[str, str]:
    """This version's Alembic head and the revision before it (never written in a test: a new
    revision must not need the tests changed)."""
    from alembic.script import ScriptDirectory

    from node.db.engine import MIGRATIONS_DIR

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None
    previous = script.get_revision(head).down_revision  # type: ignore[union-attr]
    assert isinstance(previous, str)
    return head, previous


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, timeout: float = 120.0, interval: float = 0.5, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy (tests never sleep blindly)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")


def pydicom_data_file(name: str) -> Path:
    """A file of the pydicom-data package (real CR images), found without the network."""
    dist = importlib.metadata.distribution("pydicom-data")
    path = Path(str(dist.locate_file(f"data_store/data/{name}")))
    if not path.is_file():
        pytest.fail(f"pydicom-data file {name} missing at {path}")
    return path


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def with_new_uids(ds: Dataset) -> Dataset:
    """Give a copy of a data set fresh study/series/instance UIDs (one test, one instance)."""
    ds = ds.copy()
    ds.StudyInstanceUID = new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def encoded(ds: Dataset) -> bytes:
    """The data set as a modality sends it: Part 10 bytes with its file meta."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _dx(pixels: np.ndarray, *, view: str = "PA", age: str | None = "045Y") -> Dataset:
    """A DX For Presentation, MONOCHROME2, of ``pixels`` (uint8: 8 bits, else 12 of 16)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = new_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = new_uid(), new_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Dx", "DX001", "", "O"
    if age is not None:
        ds.PatientAge = age
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "A1", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "DX", 1, 1
    ds.Manufacturer = "CXR Node tests"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", view
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["L", "F"] if view != "LL" else ["A", "F"]  # the usual display
    ds.ImagerPixelSpacing = [0.4, 0.4]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    if pixels.dtype == np.uint8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.WindowCenter, ds.WindowWidth = 128, 256
        ds.PixelData = pixels.tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = (pixels & 0x0FFF).astype(np.uint16).tobytes()
    return ds


def make_dx(source: Path, *, view: str = "PA", age: str | None = "045Y") -> Dataset:
    """A DX For Presentation chest image built with pydicom from a real CR chest's pixels."""
    pixels = dcmread(source).pixel_array[::4, ::4].astype(np.float64)
    inverted = pixels.max() - pixels  # MONOCHROME2
    # Into the 12 bits the DX stores (the CR's 15 would wrap round: a banded, unreadable film).
    return _dx(np.round(inverted * 4095 / inverted.max()).astype(np.uint16), view=view, age=age)


def dcmtk(tool: str) -> str:
    """dcmtk's own binary (pynetdicom installs same-named apps earlier on PATH)."""
    path = Path("/usr/bin") / tool
    if not path.exists():
        pytest.fail(f"{path} missing: apt-get install dcmtk")
    return str(path)


def run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def storescu(
    port: int, *files: Path, aec: str = "CXRNODE", aet: str | None = None, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu, a real modality, to 127.0.0.1:``port``."""
    calling = ["-aet", aet] if aet else []
    return run([dcmtk("storescu"), *options, *calling, "-aec", aec, "127.0.0.1", str(port), *map(str, files)])


def echo_ok(port: int, tls_args=None) -> bool:  # type: ignore[no-untyped-def]
    """A pynetdicom C-ECHO to the node; False if the association or the echo fails."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE", tls_args=tls_args)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def c_store(port: int, ds: Dataset, aet: str = "MODALITY") -> int:
    """One pynetdicom C-STORE of ``ds`` in its own transfer syntax; returns the status."""
    from pynetdicom import AE

    ae = AE(ae_title=aet)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return int(status.Status)


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy's (dicom3tools) report on a file that begin with 'Error'."""
    tool = Path("/usr/bin/dciodvfy")
    if not tool.exists():
        pytest.fail("dciodvfy missing: apt-get install dicom3tools")
    done = subprocess.run([str(tool), str(path)], capture_output=True, text=True, timeout=120, check=False)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def queued_messages(settings) -> list[dict]:  # type: ignore[no-untyped-def]
    """Analysis tasks waiting in the broker (embedded filesystem queue or Redis list)."""
    import base64

    bodies: list[bytes] = []
    if settings.broker.startswith("filesystem://"):
        folder = settings.embedded_broker_dir / "queue"
        for path in sorted(folder.glob(f"*.{settings.model_queue}.msg")):
            bodies.append(path.read_bytes())
    else:
        import redis

        client = redis.Redis.from_url(settings.broker)
        bodies = list(client.lrange(settings.model_queue, 0, -1))
        client.close()
    messages = []
    for raw in bodies:
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        args, kwargs, _ = body
        messages.append({"task": envelope["headers"]["task"], "kwargs": kwargs})
    return messages


def dx_from_picture(
    picture: Path,
    *,
    patient_id: str,
    study_date: str,
    issuer: str = "TESTS",
    patient_name: str = "Test^Course",
) -> Dataset:
    """A DX For Presentation built from a PNG/JPEG of the shared data (8-bit MONOCHROME2),
    in a new study of ``patient_id`` on ``study_date`` (DA)."""
    from PIL import Image

    ds = _dx(np.asarray(Image.open(picture).convert("L"), dtype=np.uint8), view="AP", age="060Y")
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = patient_name, patient_id, issuer
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = study_date, "090000", ""
    ds.LossyImageCompression = "01"  # from a JPEG
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds
