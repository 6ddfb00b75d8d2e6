"""The tables of the DICOM conformance statement (``docs/conformance.md``), from the code.

The statement is prose around generated blocks, each between
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``. The blocks are
rendered from what the node really does: the SCP's presentation contexts
(``node.scp.StorageSCP``), the SCU's proposed contexts for each output
(``node.scu``), the settings' defaults and the C-STORE statuses. A test
fails when the file and the code differ; ``python -m node.conformance``
rewrites the blocks.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from node import scp
from node.scu import _contexts as scu_contexts
from node.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"

# What the node exports (PS3.3 IODs); tests check each builder makes exactly this.
OUTPUT_SOP_CLASSES: dict[str, tuple[str, str]] = {
    "sr": ("1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR IOD, PS3.3 A.35.3"),
    "sc": ("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image IOD, PS3.3 A.8.1"),
    "seg": ("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation IOD, PS3.3 A.51"),
}
OUTPUT_TRANSFER_SYNTAX = ExplicitVRLittleEndian

# PS3.4 Table B.2-1: what each C-STORE status the SCP returns means here.
STORE_STATUSES: dict[int, str] = {
    scp.STATUS_SUCCESS: "stored in the spool (also for duplicates and for instances not analysed)",
    scp.STATUS_OUT_OF_RESOURCES: "spool below `min_free_bytes`, a storage error, or the audit database "
    "unavailable (nothing acknowledged that is not recorded); nothing kept, the modality retries",
    scp.STATUS_DATASET_MISMATCH: "the data set does not match its SOP Class: another SOP Class UID than "
    "the request's, or no Pixel Data in an image (PS3.4 B.2.3); the data set is kept in `spool/rejected/`",
    scp.STATUS_CANNOT_UNDERSTAND: "header or Image Pixel module cannot be understood; "
    "the attribute is named in the audit row and the data set is kept in `spool/rejected/`",
    scp.STATUS_PROCESSING_FAILURE: "unexpected internal error; the data set is kept in `spool/rejected/`",
}


def _ts(uid: str) -> str:
    return f"{UID(uid).name} | `{uid}`"


def scp_block(settings: Settings) -> str:
    contexts = scp.StorageSCP(settings).ae.supported_contexts
    rows = ["| SOP class | UID | role | transfer syntaxes |", "|---|---|---|---|"]
    lists: dict[tuple[str, ...], str] = {}
    for cx in contexts:
        syntaxes = tuple(str(t) for t in cx.transfer_syntax)
        label = lists.setdefault(syntaxes, f"list {chr(ord('A') + len(lists))}")
        abstract_syntax = UID(str(cx.abstract_syntax))
        rows.append(f"| {abstract_syntax.name} | `{abstract_syntax}` | SCP | {label} |")
    for syntaxes, label in lists.items():
        rows += ["", f"Transfer syntax {label}, in order of preference:", "", "| name | UID |", "|---|---|"]
        rows += [f"| {_ts(uid)} |" for uid in syntaxes]
    return "\n".join(rows)


def scu_block() -> str:
    rows = ["| output | SOP class | UID | IOD | role | transfer syntaxes proposed |", "|---" * 6 + "|"]
    for kind, (uid, iod) in OUTPUT_SOP_CLASSES.items():
        ds = Dataset()
        ds.SOPClassUID = uid
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = OUTPUT_TRANSFER_SYNTAX
        [(_, syntaxes)] = scu_contexts([ds])
        proposed = ", ".join(f"{UID(t).name} `{t}`" for t in syntaxes)
        rows.append(f"| {kind.upper()} | {UID(uid).name} | `{uid}` | {iod} | SCU | {proposed} |")
    return "\n".join(rows)


def policy_block(settings: Settings) -> str:
    max_pdu = "unlimited" if not settings.max_pdu else f"{settings.max_pdu} bytes"
    rows = [
        "| policy | default | setting |",
        "|---|---|---|",
        f"| AE title (called AE title must match) | `{settings.ae_title}` | `CXR_NODE_AE_TITLE` |",
        f"| port | {settings.port} | `CXR_NODE_PORT` |",
        f"| simultaneous associations (more are rejected) | {settings.max_associations} | "
        "`CXR_NODE_MAX_ASSOCIATIONS` |",
        f"| maximum PDU size received | {max_pdu} | `CXR_NODE_MAX_PDU` |",
        f"| ACSE / DIMSE / network timeouts | {settings.acse_timeout:g} / {settings.dimse_timeout:g} / "
        f"{settings.network_timeout:g} s | `CXR_NODE_ACSE_TIMEOUT`, `_DIMSE_TIMEOUT`, `_NETWORK_TIMEOUT` |",
        "| calling AE titles | any (warning); required list in production | "
        "`CXR_NODE_ALLOWED_CALLING_AETS` |",
        "| TLS (PS3.15 B.1) | off | "
        "`CXR_NODE_TLS_CERT_FILE`, `_KEY_FILE`, `_CA_FILE`, `CXR_NODE_EXPORT_TLS` |",
    ]
    return "\n".join(rows)


def status_block() -> str:
    rows = ["| status | meaning |", "|---|---|"]
    rows += [f"| `0x{code:04X}` | {text} |" for code, text in STORE_STATUSES.items()]
    return "\n".join(rows)


def blocks() -> dict[str, str]:
    """Each generated block's content, rendered from the code and the default settings."""
    settings = Settings.model_construct()  # the code's defaults, whatever the environment says
    return {
        "scp": scp_block(settings),
        "scu": scu_block(),
        "policy": policy_block(settings),
        "statuses": status_block(),
    }


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated: {name} -->\n)(.*?)(<!-- end: {name} -->)", re.DOTALL)


def stale_blocks(text: str) -> list[str]:
    """Names of the blocks missing from ``text`` or differing from the code."""
    stale = []
    for name, content in blocks().items():
        m = _pattern(name).search(text)
        if m is None or m.group(2) != content + "\n":
            stale.append(name)
    return stale


def rewrite(text: str) -> str:
    for name, content in blocks().items():
        m = _pattern(name).search(text)
        if m is not None:
            text = text[: m.start(2)] + content + "\n" + text[m.end(2) :]
    return text


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DOC
    path.write_text(rewrite(path.read_text()))
