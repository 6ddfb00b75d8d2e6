"""The DICOM SCP: C-ECHO and C-STORE of projection chest X-rays (PS3.4 Annex B).

Handlers never raise: every failure becomes a C-STORE status (PS3.4 B.2.3)
and an audit row, and nothing received is dropped (refused data sets are kept
in the spool's ``rejected/`` folder).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from node.db import audit
from node.db.audit import EventKind, Outcome
from node.exceptions import (
    DatabaseUnavailableError,
    DatasetMismatchError,
    InvalidInstanceError,
    SpoolFullError,
)
from node.ingest import Ingest
from node.scu import CONTEXT_RESULTS
from node.settings import Settings, get_settings

logger = logging.getLogger(__name__)

STORAGE_CLASSES: tuple[str, ...] = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)

# PS3.4 Table B.2-1 C-STORE status codes.
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_PROCESSING_FAILURE = 0x0110


def decodable_transfer_syntaxes() -> list[UID]:
    """Every transfer syntax whose pixel data pydicom can decode here.

    Native (uncompressed) syntaxes always; compressed ones when a decoder
    plugin (pylibjpeg-openjpeg, -libjpeg, -rle, ...) is installed.
    """
    syntaxes: list[UID] = []
    for ts in AllTransferSyntaxes:
        if not ts.is_encapsulated:  # native, incl. deflated and big endian
            syntaxes.append(ts)
            continue
        try:
            if get_decoder(ts).is_available:
                syntaxes.append(ts)
        except NotImplementedError:
            pass
    # Preferred first: explicit then implicit little endian.
    order = {"1.2.840.10008.1.2.1": 0, "1.2.840.10008.1.2": 1}
    return sorted(syntaxes, key=lambda uid: order.get(str(uid), 2))


@dataclass
class AssociationInfo:
    calling_ae: str
    peer: str


def _assoc_info(event: evt.Event) -> AssociationInfo:
    requestor = event.assoc.requestor
    return AssociationInfo(
        calling_ae=str(requestor.ae_title).strip(),
        peer=f"{requestor.address}:{requestor.port}",
    )


def _refused_contexts(event: evt.Event) -> str:
    """The presentation contexts the association refused, in words ('' for none)."""
    try:
        refused = list(event.assoc.rejected_contexts)
    except Exception:  # no negotiation record on this path
        return ""
    seen: dict[str, str] = {}
    for cx in refused:
        syntax = cx.abstract_syntax
        name = getattr(syntax, "name", None) or str(syntax)
        seen.setdefault(name, CONTEXT_RESULTS.get(int(cx.result or 0), f"result {cx.result}"))
    named = [f"{name} ({why})" for name, why in list(seen.items())[:3]]
    more = f" and {len(seen) - 3} more" if len(seen) > 3 else ""  # dcmtk proposes ~100 classes
    return "; ".join(named) + more


class StorageSCP:
    """The node's DICOM listener. ``start()`` returns once the port is bound."""

    def __init__(
        self,
        settings: Settings | None = None,
        ingest: Ingest | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.ingest = ingest or Ingest(self.settings)
        self.server: ThreadedAssociationServer | None = None
        self._lock = threading.Lock()
        self.ae = self._make_ae()

    # AE configuration ---------------------------------------------------------------
    def _make_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.require_called_aet = True
        ae.require_calling_aet = list(s.allowed_calling_aets)
        ae.maximum_associations = s.max_associations
        ae.acse_timeout = s.acse_timeout
        ae.dimse_timeout = s.dimse_timeout
        ae.network_timeout = s.network_timeout
        ae.maximum_pdu_size = s.max_pdu
        syntaxes = decodable_transfer_syntaxes()
        ae.add_supported_context(Verification)
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        if not s.allowed_calling_aets:
            logger.warning("CXR_NODE_ALLOWED_CALLING_AETS is empty: any calling AE title is accepted")
        return ae

    @property
    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_ECHO, self.handle_echo),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ACCEPTED, self.handle_accepted),
            (evt.EVT_REJECTED, self.handle_rejected),
            (evt.EVT_ABORTED, self.handle_aborted),
        ]

    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; returns the bound (host, port)."""
        from node.tls import server_context

        self.ingest.spool.ensure()
        ssl_context = server_context(self.settings)
        self.server = self.ae.start_server(
            (self.settings.host, self.settings.port),
            block=False,
            evt_handlers=self.handlers,
            ssl_context=ssl_context,
        )
        assert self.server is not None
        host, port = self.server.server_address[:2]
        logger.info(
            "%s listening on %s:%s%s",
            self.settings.ae_title,
            host,
            port,
            " (TLS)" if ssl_context is not None else "",
        )
        return str(host), int(port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.ae.shutdown()

    # Event handlers: never raise ------------------------------------------------------
    def handle_accepted(self, event: evt.Event) -> None:
        info = _assoc_info(event)
        audit.record(
            EventKind.ASSOCIATION_ACCEPTED,
            Outcome.SUCCESS,
            calling_ae=info.calling_ae,
            peer=info.peer,
        )

    def handle_rejected(self, event: evt.Event) -> None:
        """Audit a rejected association with the reason it was rejected for: the A-ASSOCIATE-RJ's
        source and diagnostic (PS3.8 9.3.4) and what the request asked for. The called AE title
        was read off the reject, which names none (pynetdicom's default, "DEFAULT"), so every
        rejection was audited as a wrong called AE, the association limit too."""
        try:
            info = _assoc_info(event)
            request = event.assoc.requestor.primitive
            called = str(getattr(request, "called_ae_title", "") or "").strip()
            reject = event.assoc.acceptor.primitive
            why = (int(reject.result_source), int(reject.diagnostic))  # type: ignore[union-attr, arg-type]
        except Exception:  # the primitives are gone on some paths
            info, called, why = AssociationInfo("", ""), "", (0, 0)
        if why == (0x01, 0x03):
            reason = f"calling AE title {info.calling_ae!r} is not allowed"
        elif why == (0x01, 0x07):
            reason = f"called AE title {called!r} is not {self.settings.ae_title!r}"
        elif why == (0x03, 0x02):
            reason = f"too many associations at once (at most {self.settings.max_associations})"
        else:
            reason = f"rejected (source {why[0]}, reason {why[1]})"
        logger.warning("association from %s (%s) rejected: %s", info.calling_ae, info.peer, reason)
        audit.record(
            EventKind.ASSOCIATION_REJECTED,
            Outcome.FAILURE,
            reason,
            calling_ae=info.calling_ae or None,
            peer=info.peer or None,
        )

    def handle_aborted(self, event: evt.Event) -> None:
        info = _assoc_info(event)
        # A modality aborts when it has no accepted context for a file it holds (a CT): say so,
        # the audit said only "a data set in transfer was not stored", as if one had been lost.
        refused = _refused_contexts(event)
        audit.record(
            EventKind.ASSOCIATION_ABORTED,
            Outcome.WARNING,
            f"association aborted; a data set in transfer, if any, was not stored; refused at "
            f"negotiation: {refused} (the node takes CR and DX images)"
            if refused
            else "association aborted; a data set in transfer was not stored",
            calling_ae=info.calling_ae,
            peer=info.peer,
        )

    def handle_echo(self, event: evt.Event) -> int:
        info = _assoc_info(event)
        audit.record(EventKind.ECHO, Outcome.SUCCESS, calling_ae=info.calling_ae, peer=info.peer)
        return STATUS_SUCCESS

    def handle_store(self, event: evt.Event) -> int | tuple[int, Dataset]:
        """C-STORE: decode the header, store atomically, audit, route and queue."""
        started = time.monotonic()
        info = _assoc_info(event)
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # malformed request
            logger.warning("C-STORE from %s: could not read the data set: %s", info.calling_ae, exc)
            return self._refuse(info, STATUS_CANNOT_UNDERSTAND, f"unreadable data set: {exc}", b"")
        affected_uid = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        try:
            result = self.ingest.receive(
                data,
                affected_sop_instance_uid=affected_uid,
                affected_sop_class_uid=str(getattr(event.request, "AffectedSOPClassUID", "")),
                calling_ae=info.calling_ae,
                peer=info.peer,
                started=started,
            )
        except DatasetMismatchError as exc:
            return self._refuse(info, STATUS_DATASET_MISMATCH, str(exc), data, affected_uid)
        except InvalidInstanceError as exc:
            return self._refuse(info, STATUS_CANNOT_UNDERSTAND, str(exc), data, affected_uid)
        except SpoolFullError as exc:
            logger.error("spool full, refusing SOP instance %s: %s", affected_uid, exc)
            return self._refuse(info, STATUS_OUT_OF_RESOURCES, str(exc), b"", affected_uid)
        except DatabaseUnavailableError as exc:
            # Refused so the modality retries; the audit row below fails too (and is logged).
            return self._refuse(info, STATUS_OUT_OF_RESOURCES, str(exc), b"", affected_uid)
        except OSError as exc:
            logger.exception("could not store SOP instance %s", affected_uid)
            return self._refuse(
                info, STATUS_OUT_OF_RESOURCES, f"storage error: {exc.strerror}", b"", affected_uid
            )
        except Exception as exc:  # never let pynetdicom see an exception
            logger.exception("unexpected failure storing SOP instance %s", affected_uid)
            return self._refuse(
                info,
                STATUS_PROCESSING_FAILURE,
                f"internal error: {type(exc).__name__}",
                data,
                affected_uid,
            )
        return result.status

    def _refuse(
        self,
        info: AssociationInfo,
        status: int,
        message: str,
        data: bytes,
        sop_instance_uid: str = "",
    ) -> int:
        kept = self.ingest.spool.quarantine(data, sop_instance_uid) if data else None
        if kept is not None:
            message = f"{message} (kept as {kept.name})"
        audit.record(
            EventKind.INSTANCE_REJECTED,
            Outcome.FAILURE,
            f"status 0x{status:04X}: {message}",
            calling_ae=info.calling_ae,
            peer=info.peer,
            sop_instance_uid=sop_instance_uid or None,
        )
        return status
