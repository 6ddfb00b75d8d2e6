"""What the outputs take from the source image: checks, header, references.

The source is a single-frame CR or DX image (PS3.3 A.2, A.26). Only its
header is used here; the pixels the outputs show come from the
``AnalysisResult`` (``result.image``), so a JPEG 2000 source is never decoded.
"""

from __future__ import annotations

import copy
import logging
from datetime import date, datetime
from typing import Any

import numpy as np
from highdicom import ContributingEquipment
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID
from pydicom.valuerep import DA, DT, TM, validate_value

from models.result import CLASSES, AnalysisResult
from node.dicom.codes import MANUFACTURER
from node.dicom.exceptions import ResultMismatchError, SourceDatasetError

logger = logging.getLogger(__name__)

# Projection X-ray storage classes the node accepts (PS3.4 B.5).
PROJECTION_SOP_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",  # CR Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    }
)

# Patient and General Study attributes that are Type 2 in every output IOD
# (PS3.3 C.7.1.1, C.7.2.1); present, possibly empty, in the outputs.
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def check_source(source: Dataset, result: AnalysisResult | None = None) -> None:
    """Raise if the source cannot be referenced or does not match the result."""
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not source.get(keyword):
            raise SourceDatasetError(f"source dataset has no {keyword}")
    if source.SOPClassUID not in PROJECTION_SOP_CLASSES:
        raise SourceDatasetError(f"SOPClassUID {source.SOPClassUID} is not a CR or DX image storage class")
    if int(source.get("NumberOfFrames", 1) or 1) != 1:
        raise SourceDatasetError("NumberOfFrames: only single-frame sources are supported")
    if result is None:
        return
    for keyword in ("Rows", "Columns"):
        if not source.get(keyword):
            raise SourceDatasetError(f"source dataset has no {keyword}")
    shape = (int(source.Rows), int(source.Columns))
    for name in ("right_lung", "left_lung", "heatmap", "image"):
        array = getattr(result, name)
        if np.shape(array)[:2] != shape:
            raise ResultMismatchError(
                f"result.{name} has shape {np.shape(array)}, source Rows x Columns is {shape[0]} x {shape[1]}"
            )


def check_result(result: AnalysisResult) -> None:
    """Raise if the classification lacks a class or a probability is not in [0, 1]."""
    missing = [name for name in CLASSES if name not in result.classification]
    if missing:
        raise ResultMismatchError(f"result.classification lacks {missing}")
    for name, value in result.classification.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ResultMismatchError(f"result.classification[{name!r}] = {value} is not in [0, 1]")


# Date and time VRs (PS3.5 6.2) that highdicom parses when it copies them.
_TEMPORAL_VRS = {"DA": DA, "DT": DT, "TM": TM}
_CHECKED_VRS = {*_TEMPORAL_VRS, "AS"}  # AS: an age, nnnD/W/M/Y


def evidence_header(source: Dataset) -> Dataset:
    """Copy of the source header (no Pixel Data) usable as highdicom evidence.

    Dates, times and ages that do not conform to PS3.5 6.2 (a birth date
    ``19519999``, a Patient's Age ``5Y``) are left out: highdicom would raise
    parsing dates, and copied into the outputs they would make them invalid. Type 2 patient and
    study attributes missing from the source, or left out so, are added
    empty, since highdicom's SR constructor reads them unconditionally.
    """
    ds = Dataset()
    for elem in source:
        if elem.tag.group == 0x7FE0 or elem.tag.group >= 0x6000 and elem.tag.group <= 0x60FF:
            continue  # Pixel Data and overlays are not needed and may be large.
        # Copies, so that setting an attribute on an output never changes the source.
        ds.add(copy.deepcopy(elem))
    if hasattr(source, "file_meta"):
        ds.file_meta = copy.deepcopy(source.file_meta)
    for elem in list(ds):
        if elem.VR in _CHECKED_VRS and not _conformant_temporal(elem):
            # The value may be a patient's birth date: name the attribute, never the value.
            logger.warning(
                "source %s: %s is not a valid %s; left out of the outputs",
                source.SOPInstanceUID,
                elem.keyword or elem.tag,
                elem.VR,
            )
            del ds[elem.tag]
    # Decode every text value, in sequences too, under the source's character set before the
    # outputs' may replace it (an item left raw kept its ISO 2022 bytes under UTF-8: garbled).
    ds.walk(lambda dataset, elem: None)
    _declare_character_set(ds, source)
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in ds:
            setattr(ds, keyword, None)
    # Modalities send "0\\0" spacing (pydicom-data's CR does); copied into a SEG it is
    # invalid (PS3.3 C.7.6.2.1.1: values are positive). Unknown is better than wrong.
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds and not _positive_pair(ds.get(keyword)):
            del ds[keyword]
    return ds


def _declare_character_set(ds: Dataset, source: Dataset) -> None:
    """Specific Character Set (0008,0005) as the outputs can declare it. A single value that
    highdicom writes is copied. Code extensions (several values, ISO 2022 escapes: the usual
    Japanese header ``\\ISO 2022 IR 87``), or a value highdicom does not write (a vendor's
    ``ISO-IR 100``, which pydicom reads by a corrected name), make the outputs UTF-8
    (``ISO_IR 192``): the text was decoded on reading, and UTF-8 writes any of it. Before, an
    unknown value made highdicom refuse (no SR, SC or SEG), and escapes copied as such showed
    garbled names in Orthanc 1.10 (``Yamada^Tarou=$B;3ED(B``), which reads the source right."""
    from highdicom.enum import SpecificCharacterSetValues

    if "SpecificCharacterSet" not in ds:
        return
    elem = ds["SpecificCharacterSet"]
    values = [str(v or "").strip() for v in (elem.value if elem.VM > 1 else [elem.value])]
    if not any(values):
        del ds["SpecificCharacterSet"]  # the default repertoire
        return
    known = {m.value for m in SpecificCharacterSetValues}
    if len(values) == 1 and values[0] in known:
        ds.SpecificCharacterSet = values[0]
        return
    logger.info(
        "source %s: Specific Character Set %s; the outputs are written in UTF-8",
        source.SOPInstanceUID,
        "\\".join(values),
    )
    ds.SpecificCharacterSet = "ISO_IR 192"


def _conformant_temporal(elem: DataElement) -> bool:
    """Whether every value of a DA, DT, TM or AS element is well formed and a real date or time."""
    values = elem.value if elem.VM > 1 else [elem.value]
    for value in values:
        if value is None or value == "":
            continue
        text = str(value)
        try:
            validate_value(elem.VR, text, config.RAISE)
            if elem.VR in _TEMPORAL_VRS:
                _TEMPORAL_VRS[elem.VR](text)  # the calendar check (month 1-12, hour 0-23)
        except ValueError:
            return False
    return True


def _positive_pair(value: Any) -> bool:
    try:
        row, column = (float(v) for v in value)
    except (TypeError, ValueError):
        return False
    return row > 0 and column > 0


def study_date(ds: Dataset) -> tuple[date | None, str | None]:
    """The study's date (Study, else Series, Acquisition or Content Date) and time, if readable."""
    for date_kw, time_kw in (
        ("StudyDate", "StudyTime"),
        ("SeriesDate", "SeriesTime"),
        ("AcquisitionDate", "AcquisitionTime"),
        ("ContentDate", "ContentTime"),
    ):
        text = str(ds.get(date_kw) or "").strip()
        try:
            day = datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            continue
        return day, (str(ds.get(time_kw) or "").strip()[:16] or None)
    return None, None


def source_reference(source: Dataset) -> Dataset:
    """Item of a Source Image Sequence / Referenced Image Sequence (PS3.3 C.7.6.1.1.2)."""
    item = Dataset()
    item.ReferencedSOPClassUID = UID(source.SOPClassUID)
    item.ReferencedSOPInstanceUID = UID(source.SOPInstanceUID)
    return item


def algorithm_equipment(algorithm_name: str, algorithm_version: str) -> ContributingEquipment:
    """Contributing Equipment item naming the algorithm (PS3.3 C.12.1.1.5)."""
    return ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        contribution_description=f"{algorithm_name} {algorithm_version}: AI analysis of chest X-ray",
    )


# Single-letter biped orientations highdicom accepts (PS3.3 C.7.6.1.1.1).
_BIPED = frozenset("APRLHF")


def patient_orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation of the source, or the radiological default.

    The models assume radiological display (patient's right on the image's
    left, head up), i.e. ``L\\F``; that is what a frontal CR or DX shows
    when Patient Orientation is absent (it is Type 2C in the CR module).
    """
    value = source.get("PatientOrientation")
    if value and len(value) == 2 and all(str(v) in _BIPED for v in value):
        return str(value[0]), str(value[1])
    logger.debug("source %s has no usable PatientOrientation; using L\\F", source.SOPInstanceUID)
    return "L", "F"
