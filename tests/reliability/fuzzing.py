"""Fuzzing the running node: hypothesis strategies over real CR/DX/SC files, sent over the network.

A case is a seed (a real CR from pydicom-data, a DX built from one, the SC the
node itself builds) and a list of mutations: attributes removed or given the
wrong VR or huge values, bad UIDs, nested sequences, pixel data truncated or
oversized, a transfer syntax that does not match the bytes, and byte-level
damage to the encoded data set (a duplicated element, a wrong length, a
changed VR, flipped or cut bytes). Every case is sent as raw bytes through
pynetdicom's C-STORE (``STORE_SEND_CHUNKED_DATASET``: the data set is not
decoded or re-encoded on the way), or through dcmtk's storescu.

Used by ``tests/reliability/test_fuzz.py`` (a few hundred cases) and
``benchmarks/fuzz_ingest.py`` (10,000).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import struct
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, _config

from tests.helpers import CLI, dcmtk, make_dx, new_uid, pydicom_data_file, wait_until

# Data sets are sent as the bytes we made, not decoded and re-encoded by pynetdicom.
_config.STORE_SEND_CHUNKED_DATASET = True

SOP_CLASSES = [
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    CTImageStorage,
]
SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    UID("1.2.840.10008.1.2.4.999"),  # not a transfer syntax
]
# Attributes the node reads; mutations aim at them more than at the rest.
KEYWORDS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "PatientAge",
    "PatientBirthDate",
    "StudyDate",
    "Manufacturer",
    "ImageType",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "PresentationIntentType",
    "PixelData",
    "ContributingEquipmentSequence",
]
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
VRS = ["AE", "AS", "CS", "DA", "DS", "IS", "LO", "OB", "OW", "SQ", "UI", "UL", "US", "UN", "UT", "FD", "XX"]


# Seeds ---------------------------------------------------------------------------------------
def _crop(ds: Dataset, size: int = 256) -> Dataset:
    """The real header with a ``size`` square of its pixels (keeps 10,000 cases affordable)."""
    pixels = ds.pixel_array[:size, :size]
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


@functools.cache
def seeds() -> dict[str, bytes]:
    """Name -> the seed written as a DICOM file (pydicom-data CRs, a DX, the node's own SC)."""
    from node.dicom.sc import build_sc
    from tests.node.dicom.fakes import make_result

    cr = _crop(dcmread(pydicom_data_file("RG1_UNCR.dcm")))
    cr_extremity = _crop(dcmread(pydicom_data_file("RG3_UNCR.dcm")))
    cr_j2k = dcmread(pydicom_data_file("RG3_J2KI.dcm"))  # JPEG 2000, as the modality sent it
    dx = _crop(make_dx(pydicom_data_file("RG1_UNCR.dcm")))
    sc = build_sc(dx, make_result(dx), "CXR Node fuzz", "0")
    out = {}
    for name, ds in {"cr": cr, "cr_extremity": cr_extremity, "cr_j2k": cr_j2k, "dx": dx, "sc": sc}.items():
        buffer = DicomBytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out[name] = buffer.getvalue()
    return out


def seed_dataset(name: str) -> Dataset:
    return dcmread(DicomBytesIO(seeds()[name]), force=True)


# Mutations -----------------------------------------------------------------------------------
# Each is a tuple (op, *args), plain data, so hypothesis can shrink it and a report can show it.
_text = st.text(st.characters(codec="latin-1"), max_size=80)
_bad_uids = st.one_of(
    st.sampled_from(["", "1.2.", ".1.2", "1..2", "1.02.3", "1.2.a", "1" * 65, "2.25." + "9" * 80, "1.2 3"]),
    _text,
)
_huge_ints = st.sampled_from([0, 1, 7, 13, 255, 256, 32767, 32768, 65535, 65536, 2**31 - 1, 2**32 - 1, -1])

dataset_ops = st.one_of(
    st.tuples(st.just("remove"), st.sampled_from(KEYWORDS)),
    st.tuples(st.just("bad_uid"), st.sampled_from(KEYWORDS[:4]), _bad_uids),
    st.tuples(st.just("int"), st.sampled_from(KEYWORDS[12:22]), _huge_ints),
    st.tuples(
        st.just("text"),
        st.sampled_from(KEYWORDS[4:12] + ["PhotometricInterpretation", "PatientName"]),
        st.one_of(_text, st.integers(1, 70_000).map(lambda n: "A" * n)),
    ),
    st.tuples(st.just("wrong_vr"), st.sampled_from(KEYWORDS), st.sampled_from(VRS), st.binary(max_size=16)),
    st.tuples(st.just("nest"), st.integers(1, 200), st.booleans()),
    st.tuples(st.just("pixels"), st.sampled_from(["cut", "grow", "odd", "empty"]), st.integers(0, 3_000_000)),
    st.tuples(st.just("private_blob"), st.integers(0, 4_000_000)),
    st.tuples(st.just("sop_class"), st.sampled_from(SOP_CLASSES)),
)
byte_ops = st.one_of(
    st.tuples(st.just("dup"), st.integers(0, 200)),
    st.tuples(
        st.just("length"), st.integers(0, 200), st.sampled_from([0, 1, 2, 3, 0xFFFF, 0xFFFFFFFF, -2, 2])
    ),
    st.tuples(st.just("vr_bytes"), st.integers(0, 200), st.sampled_from(VRS)),
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
)


@dataclass(frozen=True)
class Case:
    seed: str
    ops: tuple[tuple[Any, ...], ...]
    syntax: str | None  # the transfer syntax declared in the request, None: the seed's own
    encoding: str  # how the data set is written: "explicit" or "implicit" (little endian)

    def describe(self) -> str:
        ops = ", ".join(
            "(" + " ".join(str(a)[:24] if not isinstance(a, bytes) else a.hex()[:16] for a in op) + ")"
            for op in self.ops
        )
        return f"{self.seed} ts={self.syntax or 'own'} enc={self.encoding} {ops}"


cases = st.builds(
    Case,
    seed=st.sampled_from(["cr", "cr_extremity", "cr_j2k", "dx", "sc"]),
    ops=st.lists(st.one_of(dataset_ops, byte_ops), min_size=0, max_size=4).map(tuple),
    syntax=st.one_of(st.none(), st.sampled_from(SYNTAXES)),
    encoding=st.sampled_from(["explicit", "explicit", "implicit"]),
)


def _nested(depth: int, uid_in_items: bool) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99FUZZ", "leaf"
    for _ in range(depth):
        outer = Dataset()
        if uid_in_items:
            outer.ReferencedSOPInstanceUID = new_uid()
        outer.ReferencedImageSequence = [item]
        item = outer
    return item


def apply_dataset_op(ds: Dataset, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "remove":
        if op[1] in ds:
            del ds[op[1]]
    elif kind == "bad_uid":
        ds[op[1]] = DataElement(op[1], "UI", op[2])
    elif kind == "int":
        keyword, value = op[1], op[2]
        vr = "IS" if keyword == "NumberOfFrames" else ("SL" if value < 0 or value > 65535 else "US")
        ds[keyword] = DataElement(keyword, vr, str(value) if vr == "IS" else value)
    elif kind == "text":
        ds[op[1]] = DataElement(op[1], "LO" if op[1] != "PatientName" else "PN", op[2])
    elif kind == "wrong_vr":
        vr = op[2]
        value: Any = op[3]
        if vr in ("US", "UL"):
            value = int.from_bytes(op[3][:2] or b"\0", "little")
        elif vr == "FD":
            value = float(len(op[3]))
        elif vr == "SQ":
            value = [Dataset()]
        elif vr not in ("OB", "OW", "UN"):
            value = op[3].decode("latin-1")
        ds[op[1]] = DataElement(op[1], vr if vr != "XX" else "UN", value)
    elif kind == "nest":
        ds.ReferencedImageSequence = [_nested(op[1], op[2])]
    elif kind == "pixels":
        data = bytes(ds.get("PixelData", b"") or b"")
        how, n = op[1], op[2]
        if how == "cut":
            data = data[: n % (len(data) + 1)]
        elif how == "grow":
            data = data + bytes(n)
        elif how == "odd":
            data = data + b"\x01"
        else:
            data = b""
        ds.PixelData = data
    elif kind == "private_blob":
        block = ds.private_block(0x0099, "CXR FUZZ", create=True)
        block.add_new(0x01, "OB", bytes(op[1]))
    elif kind == "sop_class":
        ds.SOPClassUID = op[1]


def _elements(data: bytes, implicit: bool) -> list[tuple[int, int, int]]:
    """(offset, length-field offset, length-field size) of top-level elements, up to the first
    with an undefined length (a sequence or encapsulated pixel data)."""
    found, pos = [], 0
    while pos + 8 <= len(data):
        if implicit:
            length = struct.unpack_from("<I", data, pos + 4)[0]
            found.append((pos, pos + 4, 4))
            header = 8
        else:
            vr = data[pos + 4 : pos + 6].decode("latin-1")
            if vr in LONG_VRS:
                if pos + 12 > len(data):
                    break
                length = struct.unpack_from("<I", data, pos + 8)[0]
                found.append((pos, pos + 8, 4))
                header = 12
            else:
                length = struct.unpack_from("<H", data, pos + 6)[0]
                found.append((pos, pos + 6, 2))
                header = 8
        if length == 0xFFFFFFFF:
            break
        pos += header + length
    return found


def apply_byte_op(data: bytes, op: tuple[Any, ...], implicit: bool) -> bytes:
    kind = op[0]
    if kind == "flip":
        if not data:
            return data
        i = min(int(op[1] * len(data)), len(data) - 1)
        return data[:i] + bytes([op[2]]) + data[i + 1 :]
    if kind == "truncate":
        return data[: int(op[1] * len(data))]
    elements = _elements(data, implicit)
    if not elements:
        return data
    start, length_at, size = elements[op[1] % len(elements)]
    nxt = [e[0] for e in elements if e[0] > start]
    end = nxt[0] if nxt else len(data)
    if kind == "dup":
        return data[:end] + data[start:end] + data[end:]
    if kind == "length":
        old = int.from_bytes(data[length_at : length_at + size], "little")
        new = op[2] if op[2] >= 0 else old + op[2]
        new = max(0, min(new, 2 ** (8 * size) - 1))
        return data[:length_at] + new.to_bytes(size, "little") + data[length_at + size :]
    if kind == "vr_bytes" and not implicit:
        return data[: start + 4] + op[2].encode() + data[start + 6 :]
    return data


def encode(case: Case) -> tuple[bytes, str, str, str]:
    """The case as a DICOM file: (file bytes, SOP class, SOP instance, declared transfer syntax).

    The file meta carries what the C-STORE request says; the data set after it is
    whatever the mutations made of it, sent byte for byte.
    """
    ds = seed_dataset(case.seed)
    # Each case its own instance (a resend of the same UID would only test de-duplication).
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
    byte_level = []
    for op in case.ops:
        if op[0] in ("dup", "length", "vr_bytes", "flip", "truncate"):
            byte_level.append(op)
        else:
            try:
                apply_dataset_op(ds, op)
            except (ValueError, TypeError, OverflowError, KeyError):
                pass  # pydicom will not hold that value; "vr_bytes"/"length" reach the wire instead
    own = str(ds.file_meta.TransferSyntaxUID)
    implicit = case.encoding == "implicit" and not UID(own).is_encapsulated
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    try:
        write_dataset(buffer, ds)
        data = buffer.getvalue()
    except Exception:  # the mutation cannot be encoded by pydicom: send the seed's bytes damaged
        data = seeds()[case.seed][132 + _meta_length(seeds()[case.seed]) :]
        implicit = False
    for op in byte_level:
        data = apply_byte_op(data, op, implicit)
    syntax = case.syntax or (str(ImplicitVRLittleEndian) if implicit else own)
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if not re.fullmatch(r"[0-9.]{1,64}", sop_class):
        sop_class = DigitalXRayImageStorageForPresentation
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", sop_instance) or len(sop_instance) > 64:
        sop_instance = new_uid()  # the request needs one; the data set's own is what is under test
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    header = DicomBytesIO()
    header.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(header, meta, enforce_standard=True)
    return header.getvalue() + data, sop_class, sop_instance, syntax


def _meta_length(file_bytes: bytes) -> int:
    return 12 + struct.unpack_from("<I", file_bytes, 140)[0]


# Sending and the node ------------------------------------------------------------------------
@dataclass
class Outcome:
    answer: str  # "0xC210", "refused: ...", "not sent: ..."
    sop_instance_uid: str

    @property
    def status(self) -> int | None:
        return int(self.answer, 16) if self.answer.startswith("0x") else None


CONTEXT_RESULTS = {
    1: "user rejection",
    2: "no reason",
    3: "SOP class not supported",
    4: "syntax not supported",
}


def send(port: int, path: Path, sop_class: str, syntax: str) -> str:
    """One C-STORE of the file's bytes; the answer as "0xNNNN" or why there was none."""
    ae = AE(ae_title="FUZZER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    try:
        ae.add_requested_context(sop_class, syntax)
    except ValueError as exc:
        return f"not sent: {exc}"[:60]
    assoc = ae.associate("127.0.0.1", port, ae_title="CXRNODE")
    if not assoc.is_established:
        if assoc.is_rejected:
            return "refused: association rejected"
        if assoc.rejected_contexts:  # PS3.8 9.3.3.2: the node accepted no presentation context
            result = assoc.rejected_contexts[0].result
            return "refused: context rejected, " + CONTEXT_RESULTS.get(result, f"result {result}")
        return "refused: association aborted"
    try:
        status = assoc.send_c_store(path)
    except ValueError as exc:  # the node accepted no context for this class and syntax
        assoc.abort()
        return (
            "refused: no presentation context" if "presentation context" in str(exc) else f"not sent: {exc}"
        )
    except Exception as exc:  # the harness could not encode the request
        assoc.abort()
        return f"not sent: {type(exc).__name__}"
    if assoc.is_established:
        assoc.release()
    if not status:
        return "refused: aborted or no response"
    return f"0x{int(status.Status):04X}"


def send_storescu(port: int, path: Path) -> tuple[str, str | None]:
    """The same through dcmtk's storescu (its own reader and network stack).

    Returns the answer and the Affected SOP Instance UID storescu sent: it reads it from
    the data set, which byte-level mutations may have changed."""
    done = subprocess.run(
        [dcmtk("storescu"), "-d", "-aet", "FUZZER", "-aec", "CXRNODE", "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        errors="replace",  # storescu echoes the file's bytes in its dump
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    sent = re.search(r"Affected SOP Instance UID\s*:\s*(\S+)", output)
    uid = sent.group(1) if sent else None
    status = re.search(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", output)
    if status is not None:
        return f"0x{status.group(1).upper()}", uid
    if "Association Rejected" in output:
        return "refused: storescu association rejected", uid
    if "Association Accepted" in output or "Association Aborted" in output:
        return "refused: storescu no presentation context or aborted", uid
    return "not sent: storescu could not read the file", uid


@dataclass
class FuzzNode:
    """A ``cxr-node serve`` process of its own, on SQLite and the filesystem broker."""

    home: Path
    worker: bool = False
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.home / "node.log"

    @property
    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
        return {
            **clean,
            "CXR_NODE_HOME": str(self.home),
            "CXR_NODE_MIN_FREE_BYTES": "0",
            "CXR_NODE_METRICS_PORT": "0",
            "CXR_NODE_WORKER_CONCURRENCY": "1",
        }

    def start(self) -> FuzzNode:
        from tests.helpers import free_port

        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port), "--worker" if self.worker else "--no-worker"],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_until(
            lambda: (
                f"listening on 127.0.0.1:{self.port}" in self.log.read_text(errors="replace")
                or self.proc.poll() is not None
            ),  # type: ignore[union-attr]
            timeout=120,
            what="fuzz node listening",
        )
        assert self.alive(), self.log.read_text(errors="replace")[-2000:]
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_alive(self) -> bool:
        import psutil

        if not self.alive():
            return False
        children = psutil.Process(self.proc.pid).children()  # type: ignore[union-attr]
        return any("worker" in " ".join(c.cmdline()) for c in children if c.is_running())

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@dataclass
class Campaign:
    """Cases sent to one node, and the table they make."""

    node: FuzzNode
    workdir: Path
    outcomes: list[tuple[Case, Outcome]] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    storescu_every: int = 0  # every n-th case through dcmtk's storescu (0: never)

    def run_case(self, case: Case) -> Outcome:
        from tests.helpers import echo_ok

        file_bytes, sop_class, sop_instance, syntax = encode(case)
        with tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".dcm", delete=False) as fh:
            fh.write(file_bytes)
            path = Path(fh.name)
        try:
            if self.storescu_every and len(self.outcomes) % self.storescu_every == 0:
                answer, sent_uid = send_storescu(self.node.port, path)
                sop_instance = sent_uid or sop_instance
            else:
                answer = send(self.node.port, path, sop_class, syntax)
        finally:
            path.unlink(missing_ok=True)
        outcome = Outcome(answer, sop_instance)
        self.outcomes.append((case, outcome))
        if not self.node.alive() or (outcome.status is None and not echo_ok(self.node.port)):
            self.crashed.append(case.describe())
        return outcome

    def table(self) -> Counter[str]:
        return Counter(outcome.answer for _, outcome in self.outcomes)


def accounting(home: Path, outcomes: list[tuple[Case, Outcome]]) -> dict[str, Any]:
    """What the node's spool and audit say about what was acknowledged.

    ``lost``: acknowledged (0x0000) but not in the spool; ``unaudited``: in the spool
    without an ``instance.received`` row; ``stored``/``analysed``/``analysis_failed``: counts.
    """
    from sqlalchemy import create_engine, select

    from node.db.tables import AuditEvent

    spool = {p.stem for p in (home / "spool" / "instances").glob("*.dcm")}
    engine = create_engine(f"sqlite:///{home / 'audit.sqlite'}")
    with engine.connect() as conn:
        rows = conn.execute(select(AuditEvent.kind, AuditEvent.sop_instance_uid)).all()
    engine.dispose()
    by_kind: dict[str, set[str]] = {}
    for kind, uid in rows:
        by_kind.setdefault(kind, set()).add(uid)
    acked = {o.sop_instance_uid for _, o in outcomes if o.status == 0x0000}
    return {
        "stored": len(spool),
        "lost": sorted(acked - spool),
        "unaudited": sorted(spool - by_kind.get("instance.received", set())),
        "analysed": len(spool & by_kind.get("job.succeeded", set())),
        "analysis_failed": len(spool & by_kind.get("job.failed", set())),
        "eligible": len(spool - by_kind.get("instance.ineligible", set())),
    }


def wait_analysed(home: Path, outcomes: list[tuple[Case, Outcome]], timeout: float) -> dict[str, Any]:
    """Poll until every stored, eligible instance is analysed or failed (audited); the books."""
    wait_until(
        lambda: (b := accounting(home, outcomes))["analysed"] + b["analysis_failed"] >= b["eligible"],
        timeout=timeout,
        interval=1.0,
        what="every stored instance analysed or failed",
    )
    return accounting(home, outcomes)
