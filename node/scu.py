"""A small C-STORE SCU (PS3.4 B.2): ``cxr-node send`` and the export outbox use it."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from node.exceptions import SendError
from node.settings import Destination

logger = logging.getLogger(__name__)

# PS3.7 Annex C: 0x0000 success, 0xB000/0xB007/0xB006 warnings.
WARNING_STATUSES = {0xB000, 0xB006, 0xB007}
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255
# A-ASSOCIATE-AC presentation context results (PS3.8 Table 9-18) other than acceptance.
CONTEXT_RESULTS = {
    0x01: "user rejection",
    0x02: "no reason",
    0x03: "SOP class not supported",
    0x04: "transfer syntaxes not supported",
}


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


def refused_contexts_reason(
    ae_title: str, contexts: Iterable[tuple[str, Sequence[str]]], refused: dict[str, int] | None = None
) -> str:
    """PS3.8 9.3.3.2: the peer accepted the association but none of the presentation contexts
    proposed, named by SOP class and the syntaxes proposed, with the peer's result
    (``refused``: SOP class UID to result) where known."""
    refused = refused or {}
    named = []
    for sop_class, syntaxes in contexts:
        why = CONTEXT_RESULTS.get(refused.get(sop_class, 0), "")
        proposed = " / ".join(UID(uid).name for uid in syntaxes)
        named.append(f"{UID(sop_class).name} in {proposed}" + (f" ({why})" if why else ""))
    return f"{ae_title} accepted no presentation context for " + "; ".join(named)


def _contexts(datasets: Iterable[Dataset]) -> list[tuple[str, list[str]]]:
    """One requested context per SOP class, offering each data set's own syntax first.

    Then Explicit VR Little Endian and Implicit VR Little Endian, the default every
    SCP supports (PS3.5 10.1), also for a compressed data set: it is sent
    decompressed if the peer takes only those (:func:`_as_accepted`).
    """
    wanted: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = wanted.setdefault(str(ds.SOPClassUID), [])
        for uid in (str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if uid not in syntaxes:
                syntaxes.append(uid)
    if len(wanted) > MAX_CONTEXTS:
        raise SendError(f"{len(wanted)} SOP classes in one association; at most {MAX_CONTEXTS}")
    return list(wanted.items())


def _accepted_syntaxes(assoc: Association, sop_class: str) -> list[UID]:
    """The transfer syntaxes the peer accepted for a SOP class (one per accepted context)."""
    return [UID(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts if cx.abstract_syntax == sop_class]


def _as_accepted(ds: Dataset, accepted: Collection[UID]) -> Dataset | None:
    """The data set in a syntax the peer accepted for its SOP class; None if there is none.

    pynetdicom converts between the uncompressed syntaxes of one byte order
    (Explicit and Implicit VR, deflated or not) as it encodes; a compressed data
    set the peer takes only uncompressed is decompressed here, a lossless one
    bit-exact, with the same SOP Instance UID.
    """
    ts = ds.file_meta.TransferSyntaxUID
    if ts in accepted:
        return ds
    if not any(not uid.is_compressed and uid.is_little_endian for uid in accepted):
        return None
    if not ts.is_compressed:
        return ds if ts.is_little_endian else None
    plain = copy.deepcopy(ds)  # the caller's data set stays as read
    # Explicit VR Little Endian; Photometric Interpretation and Planar Configuration as decoded.
    plain.decompress(generate_instance_uid=False)
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

    Raises SendError if the association is rejected, cannot be made, or the peer
    accepts none of the presentation contexts proposed.
    """
    if not datasets:
        return []
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    contexts = _contexts(datasets)
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    tls_args = (ssl_context, destination.host) if ssl_context is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(f"association with {destination} rejected")
        if assoc.rejected_contexts:  # accepted, then aborted by pynetdicom: no context to use
            refused = {str(cx.abstract_syntax): int(cx.result or 0) for cx in assoc.rejected_contexts}
            raise SendError(refused_contexts_reason(destination.ae_title, contexts, refused))
        raise SendError(f"association with {destination} aborted or unreachable")
    results: list[SendResult] = []
    try:
        for index, ds in enumerate(datasets):
            source = sources[index] if sources else ""
            sop_instance_uid = str(ds.SOPInstanceUID)
            started = time.perf_counter()
            try:
                sendable = _as_accepted(ds, _accepted_syntaxes(assoc, ds.SOPClassUID))
                reason = "" if sendable is not None else no_context_reason(ds)
            except Exception as exc:  # a decoder missing or failing: pydicom raises several kinds
                ts = ds.file_meta.TransferSyntaxUID
                sendable, reason = None, f"not sent: cannot decompress {ts.name}: {exc}"
            if sendable is not None:
                try:
                    status_ds = assoc.send_c_store(sendable)
                except (ValueError, RuntimeError) as exc:  # cannot be encoded, or the association ended
                    reason = f"not sent: {exc}"
            if reason:
                logger.warning("cannot send %s to %s: %s", sop_instance_uid, destination, reason)
                results.append(SendResult(sop_instance_uid, None, source, reason))
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
