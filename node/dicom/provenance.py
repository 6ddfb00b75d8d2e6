"""Recognising instances the node made itself (loop protection).

A PACS that routes whole studies to the node sends our own SR, SC or SEG
back, or an image made from one (a DX converted from our SC). Those are
stored and never analysed. The marks, strongest first:

- the SOP Instance UID or Series Instance UID is one that ``node.dicom.uids``
  derives from a referenced source instance (or the study), an output kind
  and a software version the data set names: only the node makes these;
- ``Manufacturer`` or a Contributing Equipment item (PS3.3 C.7.5.1,
  C.12.1.1.5) naming the node.

Light on purpose: the SCP process imports it through ``node.routing``.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node.dicom.uids import KINDS, derive_series_uid, derive_uid

# Manufacturer (0008,0070) of every output and of its Contributing Equipment item.
MANUFACTURER = "CXR Node"


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [str(value)]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return [str(value)]


def sequence_items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence attribute; none when a sender gave it another VR (a string,
    a number), so a rule reading the header never iterates a value that is not a sequence."""
    value = ds.get(keyword)
    if not isinstance(value, Sequence | list):
        return []
    return [item for item in value if isinstance(item, Dataset)]


def _software_versions(ds: Dataset) -> set[str]:
    versions = set(_values(ds.get("SoftwareVersions")))
    for item in sequence_items(ds, "ContributingEquipmentSequence"):
        versions.update(_values(item.get("SoftwareVersions")))
    return {v.strip() for v in versions if v.strip()}


def _referenced_instances(ds: Dataset) -> set[str]:
    """Every Referenced SOP Instance UID in the data set (Source Image, evidence, ...)."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID" and elem.value:
            found.add(str(elem.value))
    return found


def _is_ours(text: object) -> bool:
    return str(text or "").strip().casefold() == MANUFACTURER.casefold()


def own_output(ds: Dataset) -> str | None:
    """Why ``ds`` is one of the node's outputs, or None if it is not.

    The reason names the mark (UIDs at most, never patient data).
    """
    versions = _software_versions(ds)
    sop_instance_uid = str(ds.get("SOPInstanceUID", "") or "")
    if versions and sop_instance_uid:
        for source_uid in _referenced_instances(ds):
            for kind in KINDS:
                for version in versions:
                    if derive_uid(source_uid, kind, version) == sop_instance_uid:
                        return f"SOP Instance UID is the node's {kind} UID for source {source_uid}"
    study_instance_uid = str(ds.get("StudyInstanceUID", "") or "")
    series_instance_uid = str(ds.get("SeriesInstanceUID", "") or "")
    if versions and study_instance_uid and series_instance_uid:
        for kind in KINDS:
            for version in versions:
                if derive_series_uid(study_instance_uid, kind, version) == series_instance_uid:
                    return f"Series Instance UID is the node's {kind} series of the study"
    if _is_ours(ds.get("Manufacturer")):
        return f"Manufacturer (0008,0070) is {MANUFACTURER!r}"
    for item in sequence_items(ds, "ContributingEquipmentSequence"):
        if _is_ours(item.get("Manufacturer")):
            return f"Contributing Equipment Sequence (0018,A001) names {MANUFACTURER!r}"
    return None
