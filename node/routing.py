"""Routing rules: is a stored instance an adult frontal chest X-ray we should analyse?

Ineligible instances are still stored and audited with the reason. The reason
strings hold no patient data (no ages, names or dates), only the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset

from node.dicom.provenance import own_output, sequence_items

ANALYSED_MODALITIES = {"CR", "DX"}
# PS3.16 CID 4031 / PS3.3 C.7.3.1 defined terms that mean the chest.
CHEST_BODY_PARTS = {"", "CHEST", "THORAX", "LUNG", "PORTABLE CHEST"}
FRONTAL_VIEWS = {"PA", "AP"}
# PS3.3 C.8.11.5 View Position defined terms for laterals and obliques.
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD", "LAO", "RAO", "LPO", "RPO"}

GRAYSCALE = {"MONOCHROME1", "MONOCHROME2"}
# PS3.3 C.8.11.1.1.1: a For Processing image holds the detector's values before the processing
# that makes a film of them; the models read films as they are presented.
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
ANALYSED_BITS_ALLOCATED = (8, 16)
# Portable chest X-rays are 1-4k pixels a side; below this there is nothing to analyse.
MIN_SIDE = 128

_AGE_RE = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 30.4375, "Y": 365.25}


@dataclass(frozen=True)
class Decision:
    eligible: bool
    reason: str | None = None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value or "").strip().upper()


def patient_age_years(ds: Dataset) -> float | None:
    """Age at the study from PatientAge (AS, PS3.5 6.2), else birth date and study date."""
    age = _text(ds, "PatientAge")
    m = _AGE_RE.match(age)
    if m:
        return int(m.group(1)) * _DAYS_PER_UNIT[m.group(2)] / 365.25
    birth = _parse_da(ds.get("PatientBirthDate"))
    when = None
    for keyword in ("StudyDate", "AcquisitionDate", "ContentDate", "SeriesDate"):
        when = _parse_da(ds.get(keyword))
        if when:
            break
    if birth and when and when >= birth:
        return (when - birth).days / 365.25
    return None


def _parse_da(value: object) -> date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _view_is_lateral(ds: Dataset) -> bool:
    # View Code Sequence (PS3.3 C.8.11.5.1.1, CID 4010) when View Position is empty.
    for item in sequence_items(ds, "ViewCodeSequence"):
        meaning = str(item.get("CodeMeaning", "")).lower()
        if "lateral" in meaning or "oblique" in meaning:
            return True
    return False


def decide(ds: Dataset, min_age: int = 18) -> Decision:
    """Apply the routing rules to the header of a stored instance."""
    # Loop protection first: our own outputs routed back are never analysed.
    origin = own_output(ds)
    if origin is not None:
        return Decision(False, f"made by this node, not analysed again: {origin}")
    modality = _text(ds, "Modality")
    if modality not in ANALYSED_MODALITIES:
        return Decision(False, f"modality {modality or '(empty)'} is not CR or DX")
    if (
        _text(ds, "PresentationIntentType") == "FOR PROCESSING"
        or str(ds.get("SOPClassUID", "")) == DX_FOR_PROCESSING
    ):
        return Decision(False, "a For Processing image (detector values, not a film to read) is not analysed")
    body_part = _text(ds, "BodyPartExamined")
    if body_part not in CHEST_BODY_PARTS:
        return Decision(False, f"body part {body_part} is not the chest")
    view = _text(ds, "ViewPosition")
    if view in LATERAL_VIEWS or (not view and _view_is_lateral(ds)):
        return Decision(False, f"view {view or 'lateral'} is not frontal (PA/AP)")
    if view and view not in FRONTAL_VIEWS:
        return Decision(False, f"view {view} is not frontal (PA/AP)")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric and photometric not in GRAYSCALE:
        return Decision(False, f"photometric interpretation {photometric} is not grayscale")
    # PS3.3 C.8.11.3 (DX Image module): 8 or 16 bits allocated; the models take only these.
    bits_allocated = ds.get("BitsAllocated")
    if bits_allocated is not None and bits_allocated not in ANALYSED_BITS_ALLOCATED:
        return Decision(False, f"bits allocated {bits_allocated} is not 8 or 16")
    try:
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except (TypeError, ValueError):
        rows = columns = 0
    if rows and columns and min(rows, columns) < MIN_SIDE:
        return Decision(False, f"image {rows}x{columns} is smaller than {MIN_SIDE} pixels a side")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:  # one film per instance; which frame is the chest film is not for us to guess
        return Decision(False, f"image has {frames} frames; one frame a film is analysed")
    age = patient_age_years(ds)
    if age is not None and age < min_age:
        return Decision(False, f"patient younger than {min_age} years")
    return Decision(True)
