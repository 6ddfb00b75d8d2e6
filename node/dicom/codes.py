"""Coded concepts used by the outputs, in one place.

Standard codes come from pydicom's code dictionary (DCM, SCT, UCUM, PS3.16).
Concepts that have no standard code (the Cohen et al. 2020 severity scores and
the "other disease" class) use the private coding scheme ``99CXRNODE``
(PS3.16 8.2: designators beginning with "99" are private), declared in the
Coding Scheme Identification Sequence of every SR (PS3.3 C.12.1.1.3).
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from models import quality

# Re-exported: the builders name the node through this module.
from node.dicom.provenance import MANUFACTURER as MANUFACTURER

PRIVATE_SCHEME = "99CXRNODE"
PRIVATE_SCHEME_NAME = "CXR Node private concepts"


def private_scheme_item() -> CodingSchemeIdentificationItem:
    """Item of the Coding Scheme Identification Sequence for ``99CXRNODE``."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name=PRIVATE_SCHEME_NAME,
        responsible_organization=MANUFACTURER,
    )


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


# Classes of models.result.CLASSES (Basu et al.): SNOMED CT where a code exists.
CLASS_CONCEPTS: dict[str, CodedConcept] = {
    "normal": CodedConcept.from_code(codes.SCT.Normal),  # 17621005
    "other_disease": _private("OTHERDISEASE", "Other lung disease, not pneumonia"),
    "pneumonia": CodedConcept(value="233604007", scheme_designator="SCT", meaning="Pneumonia"),
    "covid19": CodedConcept(value="840539006", scheme_designator="SCT", meaning="COVID-19"),
}

# Short display names for the burned-in legend.
CLASS_LABELS: dict[str, str] = {
    "normal": "Normal",
    "other_disease": "Other disease",
    "pneumonia": "Pneumonia",
    "covid19": "COVID-19",
}

# Cohen et al. 2020 severity scores (no standard code exists): their geographic extent and
# opacity scores. Short meanings: OHIF writes "<meaning>: <value> {score}" in the lung.
GEOGRAPHIC_EXTENT = _private("GEOEXTENT", "Extent")
OPACITY = _private("OPACITY", "Opacity")

PROBABILITY = CodedConcept.from_code(codes.DCM.Probability)  # 122157
# One concept per class for its probability, so that a viewer that shows a NUM by its
# concept name alone (OHIF 3.13: "<meaning>: <value> <unit code>") says which class it is.
CLASS_PROBABILITY: dict[str, CodedConcept] = {
    "normal": _private("PNORMAL", "Normal probability"),
    "other_disease": _private("POTHERDISEASE", "Other disease probability"),
    "pneumonia": _private("PPNEUMONIA", "Pneumonia probability"),
    "covid19": _private("PCOVID19", "COVID-19 probability"),
}
CLASSIFICATION = CodedConcept.from_code(codes.SCT.Classification)  # 278201002
AREA = CodedConcept.from_code(codes.SCT.Area)  # 42798000
LUNG = CodedConcept.from_code(codes.SCT.Lung)  # 39607008
RIGHT = CodedConcept.from_code(codes.SCT.Right)  # 24028007
LEFT = CodedConcept.from_code(codes.SCT.Left)  # 7771000
RIGHT_LUNG = CodedConcept(value="3341006", scheme_designator="SCT", meaning="Right lung")
LEFT_LUNG = CodedConcept(value="44029006", scheme_designator="SCT", meaning="Left lung")
ABNORMAL_OPACITY = CodedConcept.from_code(codes.DCM.AbnormalOpacity)  # 112033
CHEST_XRAY = CodedConcept(value="399208008", scheme_designator="SCT", meaning="Plain X-ray of chest")

# UCUM units (PS3.16 CID 7181 and UCUM).
UNIT_ONE = CodedConcept.from_code(codes.UCUM.NoUnits)  # "1"
UNIT_PERCENT = CodedConcept(value="%", scheme_designator="UCUM", meaning="percent")
UNIT_SCORE = CodedConcept(value="{score}", scheme_designator="UCUM", meaning="score")
UNIT_CM2 = CodedConcept(value="cm2", scheme_designator="UCUM", meaning="square centimeter")

# Similar cases, the patient's course and triage (issue 11).
EMBEDDING_DISTANCE = _private("EMBDIST", "Cosine distance in the retrieval embedding")
EXTENT_CHANGE = _private("GEOEXTENTCHG", "Change in geographic extent score")
OPACITY_CHANGE = _private("OPACITYCHG", "Change in opacity score")
INTERVAL = _private("INTERVAL", "Time since the earlier study")
SIMILAR_CASE = _private("SIMILARCASE", "Similar earlier case")
TRIAGE = _private("TRIAGE", "Triage priority")
URGENT = CodedConcept(value="103391001", scheme_designator="SCT", meaning="Urgent")
ROUTINE = CodedConcept(value="50811001", scheme_designator="SCT", meaning="Routine")
UNIT_DAY = CodedConcept(value="d", scheme_designator="UCUM", meaning="day")

# What a viewer reads (issue 19): OHIF 3.13 writes a TID 1501 group's Comment TEXT items as
# text, and places a group's text by the SCOORD under one of its measurements; that
# SCOORD's purpose of reference (TID 320) says it is only where the text goes.
COMMENT = CodedConcept.from_code(codes.DCM.Comment)  # 121106
LABEL_ANCHOR = _private("LABELANCHOR", "Where a viewer writes the group's text")

# The anatomical quality check (models/quality.py, issue 15): a result the node withholds.
ASSESSMENT = _private("ASSESSMENT", "Assessment by the algorithm")
# Where the lungs were found and the class stands, only the severity is withheld: so named (a
# whole-image "Assessment by the algorithm: Not assessable" beside "Triage: Urgent" read as a
# contradiction).
SEVERITY_ASSESSMENT = _private("SEVASSESSMENT", "Severity assessment by the algorithm")
NOT_ASSESSABLE = _private("NOTASSESSABLE", "Not assessable")
# Why: one coded reason per failed check (a blank or noise film is not a failed outline).
NOT_ASSESSABLE_REASON = _private("NAREASON", "Reason not assessable")
QC_REASONS = {
    reason: _private("QC" + reason.replace("_", "").upper(), text[:1].upper() + text[1:])
    for reason, text in quality.REASONS.items()
}
