"""Deterministic UIDs for the outputs of one analysis.

A retried job must produce the same SOP Instance UIDs, so that the PACS
replaces instead of duplicating (see docs/architecture.md, idempotent tasks).
UIDs use the ``2.25.`` root with a name-based UUID (PS3.5 B.2 and
ISO/IEC 9834-8), which needs no registered organisation root and is at most
44 characters long, well within the 64 of the UI VR (PS3.5 6.2).
"""

from __future__ import annotations

import uuid

from node.dicom.exceptions import UIDError

# Namespace of all CXR Node UIDs; fixed forever so UIDs stay stable across releases.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:cxr-node:dicom-outputs")

# Output kinds and their fixed Series Number (General Series Module, PS3.3 C.7.3.1).
KINDS: dict[str, int] = {"sr": 9901, "sc": 9902, "seg": 9903}


def _uid_from_name(name: str) -> str:
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"


def _check(value: str, attribute: str) -> str:
    if not value or not isinstance(value, str):
        raise UIDError(f"{attribute} is missing or empty")
    return value.strip()


def derive_uid(sop_instance_uid: str, kind: str, model_version: str) -> str:
    """SOP Instance UID of one output, derived from its input.

    Parameters
    ----------
    sop_instance_uid
        SOP Instance UID of the source image.
    kind
        Output kind, e.g. ``"sr"``, ``"sc"`` or ``"seg"``.
    model_version
        Version of the algorithm that produced the result.

    Returns
    -------
    str
        A ``2.25.`` UID that is the same for the same three inputs.
    """
    sop_instance_uid = _check(sop_instance_uid, "SOPInstanceUID")
    kind = _check(kind, "kind")
    model_version = _check(model_version, "model_version")
    return _uid_from_name(f"instance|{sop_instance_uid}|{kind}|{model_version}")


def derive_series_uid(study_instance_uid: str, kind: str, model_version: str) -> str:
    """Series Instance UID shared by all outputs of one kind in one study."""
    study_instance_uid = _check(study_instance_uid, "StudyInstanceUID")
    kind = _check(kind, "kind")
    model_version = _check(model_version, "model_version")
    return _uid_from_name(f"series|{study_instance_uid}|{kind}|{model_version}")


def derive_device_uid(algorithm_name: str, algorithm_version: str) -> str:
    """Device Observer UID (TID 1004) of one algorithm version."""
    algorithm_name = _check(algorithm_name, "algorithm_name")
    algorithm_version = _check(algorithm_version, "algorithm_version")
    return _uid_from_name(f"device|{algorithm_name}|{algorithm_version}")


def instance_number(source: object) -> int:
    """Instance Number of an output of ``source``: unique in the output series (one per study
    and kind) for every film of the study, and in the films' order. Two films in one study each
    gave Instance Number 1, so the PACS's order was arbitrary. From the source's Series Number
    and Instance Number (``series * 1000 + instance``; the modalities' numbering, one film per
    series or several); ``series * 1000`` without an Instance Number; its Instance Number alone
    where it has no Series Number or the number is 1000 or more; else 1."""

    def number(keyword: str) -> int | None:
        try:
            value = int(getattr(source, keyword, None))  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # absent, empty, "x", "inf"
            return None
        return value if 0 <= value < 1_000_000 else None

    series, instance = number("SeriesNumber"), number("InstanceNumber")
    if instance is None:  # Type 2, may be empty: the series still orders it
        return max((series or 0) * 1000, 1)
    if instance >= 1000:
        return instance
    return series * 1000 + instance if series is not None else max(instance, 1)


def series_number(kind: str) -> int:
    """Fixed Series Number of an output kind."""
    try:
        return KINDS[kind]
    except KeyError:
        raise UIDError(f"unknown output kind {kind!r}; expected one of {sorted(KINDS)}") from None
