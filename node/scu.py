"""A small C-STORE SCU (PS3.4 B.2): ``cxr-node send`` and the export outbox use it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from node.exceptions import SendError
from node.settings import Destination

logger = logging.getLogger(__name__)

# PS3.7 Annex C: 0x0000 success, 0xB000/0xB007/0xB006 warnings.
WARNING_STATUSES = {0xB000, 0xB006, 0xB007}
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255


@dataclass(frozen=True)
class SendResult:
    sop_instance_uid: str
    status: int | None  # None: not sent or no response (see ``reason``)
    source: str = ""
    reason: str = ""  # why there is no status, in words
    seconds: float = 0.0  # the C-STORE's own time (not the association's)

    @property
    def ok(self) -> bool:
        return self.status is not None and (self.status == 0 or self.status in WARNING_STATUSES)

    def describe(self) -> str:
        """The status as a person reads it: ``0x0000``, or why there is none."""
        return f"0x{self.status:04X}" if self.status is not None else (self.reason or "no response")


def no_context_reason(ds: Dataset) -> str:
    """PS3.8 9.3.3.2: the peer accepted no presentation context for this SOP class and syntax."""
    return (
        f"refused: no accepted presentation context for {ds.SOPClassUID.name} "
        f"in {ds.file_meta.TransferSyntaxUID.name}"
    )


def _contexts(datasets: Iterable[Dataset]) -> list[tuple[str, list[str]]]:
    """One requested context per SOP class, offering each data set's own syntax first.

    A compressed data set is also offered uncompressed (Explicit VR Little
    Endian), sent decompressed if the peer takes only that (:func:`_as_accepted`).
    """
    wanted: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = wanted.setdefault(str(ds.SOPClassUID), [])
        ts = str(ds.file_meta.TransferSyntaxUID)
        for uid in (ts, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if uid in syntaxes:
                continue
            if uid == ts or not ds.file_meta.TransferSyntaxUID.is_compressed or uid == ExplicitVRLittleEndian:
                syntaxes.append(uid)
    if len(wanted) > MAX_CONTEXTS:
        raise SendError(f"{len(wanted)} SOP classes in one association; at most {MAX_CONTEXTS}")
    return list(wanted.items())


def _as_accepted(ds: Dataset, assoc: Any) -> Dataset:
    """The data set, decompressed if the peer accepted its SOP class only uncompressed."""
    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_compressed:
        return ds
    accepted = {
        str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == ds.SOPClassUID
    }
    if str(ts) in accepted or ExplicitVRLittleEndian not in accepted:
        return ds
    plain = ds.copy()
    plain.decompress(generate_instance_uid=False)  # Explicit VR Little Endian, the same instance
    return plain


def send_datasets(
    datasets: Sequence[Dataset],
    destination: Destination,
    calling_ae: str = "CXRNODE",
    *,
    timeout: float = 30.0,
    ssl_context: Any = None,
    sources: Sequence[str] | None = None,
) -> list[SendResult]:
    """C-STORE each data set over one association.

    Raises SendError if the association is rejected or cannot be made.
    """
    if not datasets:
        return []
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntaxes in _contexts(datasets):
        ae.add_requested_context(sop_class, syntaxes)
    tls_args = (ssl_context, destination.host) if ssl_context is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted or unreachable"
        raise SendError(f"association with {destination} {reason}")
    results: list[SendResult] = []
    try:
        for index, ds in enumerate(datasets):
            source = sources[index] if sources else ""
            sop_instance_uid = str(ds.SOPInstanceUID)
            started = time.perf_counter()
            try:
                status_ds = assoc.send_c_store(_as_accepted(ds, assoc))
            except (ValueError, RuntimeError) as exc:  # no accepted context for the data set
                logger.warning("cannot send %s to %s: %s", sop_instance_uid, destination, exc)
                results.append(SendResult(sop_instance_uid, None, source, no_context_reason(ds)))
                continue
            status = int(status_ds.Status) if "Status" in status_ds else None
            reason = "" if status is not None else "no response: association aborted or timed out"
            results.append(
                SendResult(sop_instance_uid, status, source, reason, time.perf_counter() - started)
            )
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    # Data sets never attempted because the association dropped.
    sent = {r.sop_instance_uid for r in results}
    for index, ds in enumerate(datasets):
        if str(ds.SOPInstanceUID) not in sent:
            source = sources[index] if sources else ""
            ended = "not sent: the association ended"
            results.append(SendResult(str(ds.SOPInstanceUID), None, source, ended))
    return results


def send_files(
    paths: Sequence[Path], destination: Destination, calling_ae: str = "CXRNODE", **kwargs: Any
) -> list[SendResult]:
    """Read DICOM files and C-STORE them (see :func:`send_datasets`)."""
    datasets = [dcmread(path) for path in paths]
    return send_datasets(datasets, destination, calling_ae, sources=[str(p) for p in paths], **kwargs)
