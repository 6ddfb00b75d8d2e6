"""Sources, fabricated results and helpers for the DICOM output tests.

Sources are real CR chest images from the pydicom-data package (MONOCHROME1,
uncompressed and JPEG 2000) and a small DX image built here. The results are
synthetic but plausible (two elliptic lungs, a heatmap blob in one lung):
these tests check the DICOM builders, not the models.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.result import AnalysisResult, LungSeverity, Severity
from tests.helpers import pydicom_data_file

ALGORITHM_NAME = "cxr-node-test"
ALGORITHM_VERSION = "1.2.3"


def read_cr(name: str) -> Dataset:
    ds = pydicom.dcmread(pydicom_data_file(name))
    # The sample's Pixel Spacing is 0\0, which dciodvfy rejects; real CR has it.
    ds.PixelSpacing = [0.16, 0.16]
    # "ward" is a one-component name that dciodvfy and highdicom warn about.
    ds.ReferringPhysicianName = "Ward^"
    return ds


def make_dx(rows: int = 320, columns: int = 288) -> Dataset:
    """A small DX For Presentation chest image (PS3.3 A.26) built with pydicom."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.Modality = "DX"
    ds.PatientName = "Test^Dx"
    ds.PatientID = "DX-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyDate = "20260102"
    ds.StudyTime = "101500"
    ds.ContentDate = "20260102"
    ds.ContentTime = "101600"
    ds.AccessionNumber = "ACC-DX-1"
    ds.StudyID = "S1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Test"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.Laterality = ""
    ds.BurnedInAnnotation = "NO"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelSpacing = [0.5, 0.5]
    ds.AnatomicRegionSequence = [Dataset()]
    ds.AnatomicRegionSequence[0].CodeValue = "43799004"
    ds.AnatomicRegionSequence[0].CodingSchemeDesignator = "SCT"
    ds.AnatomicRegionSequence[0].CodeMeaning = "Thorax"
    ds.ViewCodeSequence = [Dataset()]
    ds.ViewCodeSequence[0].CodeValue = "399348003"
    ds.ViewCodeSequence[0].CodingSchemeDesignator = "SCT"
    ds.ViewCodeSequence[0].CodeMeaning = "postero-anterior"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.PresentationLUTShape = "IDENTITY"
    ds.QualityControlImage = "NO"
    ds.PatientPosition = ""
    ramp = np.linspace(0, 4095, rows * columns, dtype=np.float64).reshape(rows, columns)
    ds.PixelData = ramp.astype(np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def make_result(source: Dataset, covid: float = 0.91, spacing: bool = True) -> AnalysisResult:
    """A plausible result at the source's Rows x Columns."""
    rows, columns = int(source.Rows), int(source.Columns)
    yy, xx = np.mgrid[0:rows, 0:columns]
    cy, ry, rx = rows * 0.5, rows * 0.3, columns * 0.18  # each lung 36 % of the width, as on a PA film
    # Radiological convention: the patient's right lung is on the image's left.
    right_lung = ((yy - cy) / ry) ** 2 + ((xx - columns * 0.3) / rx) ** 2 <= 1.0
    left_lung = ((yy - cy) / ry) ** 2 + ((xx - columns * 0.7) / rx) ** 2 <= 1.0
    blob = np.exp(-(((yy - rows * 0.6) / (rows * 0.1)) ** 2 + ((xx - columns * 0.3) / (columns * 0.08)) ** 2))
    heatmap = (blob / blob.max()).astype(np.float32)
    image = (np.linspace(40, 200, columns)[None, :] * np.ones((rows, 1))).astype(np.uint8)
    rest = (1.0 - covid) / 3.0
    return AnalysisResult(
        classification={"normal": rest, "other_disease": rest, "pneumonia": rest, "covid19": covid},
        severity=Severity(
            geographic_extent=5.25,
            opacity=3.5,
            right=LungSeverity(extent=3.0, opacity=2.0),
            left=LungSeverity(extent=2.25, opacity=1.5),
        ),
        right_lung=right_lung,
        left_lung=left_lung,
        heatmap=heatmap,
        image=image,
        models={"segmentation": "unet@0.1", "classification": "densenet@1.2.3"},
        pixel_spacing_mm=(0.16, 0.16) if spacing else None,
    )


def content_items(ds: Dataset) -> list[Dataset]:
    """Every item of an SR content tree, depth first."""
    items: list[Dataset] = []
    stack = list(reversed(ds.get("ContentSequence", [])))
    while stack:
        item = stack.pop()
        items.append(item)
        stack.extend(reversed(item.get("ContentSequence", [])))
    return items


def concept(item: Dataset) -> tuple[str, str]:
    """(CodingSchemeDesignator, CodeValue) of an item's concept name."""
    code = item.ConceptNameCodeSequence[0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def measurement_groups(sr: Dataset) -> dict[str, Dataset]:
    """TID 1501 measurement groups of a TID 1500 report, by tracking identifier."""
    groups: dict[str, Dataset] = {}
    for item in content_items(sr):
        if item.ValueType == "CONTAINER" and concept(item) == ("DCM", "125007"):
            for child in item.ContentSequence:
                if child.ValueType == "TEXT" and concept(child) == ("DCM", "112039"):
                    groups[str(child.TextValue)] = item
    return groups


def numeric(group: Dataset, scheme: str, value: str) -> tuple[float, str]:
    """(value, UCUM unit) of the one NUM item with this concept name in a group."""
    found = [
        child
        for child in group.ContentSequence
        if child.ValueType == "NUM" and concept(child) == (scheme, value)
    ]
    assert len(found) == 1, f"{len(found)} NUM items ({scheme}, {value})"
    measured = found[0].MeasuredValueSequence[0]
    return float(measured.NumericValue), str(measured.MeasurementUnitsCodeSequence[0].CodeValue)


def roundtrip(ds: Dataset) -> Dataset:
    """Write with dcmwrite to bytes and read back."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))
