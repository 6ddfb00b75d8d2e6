"""What one analysis of one image produces: the contract between the models and
the DICOM outputs (SR, SC, SEG) and the ``analyze --json`` object.

Deliberately free of torch so the node can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

# Class keys in the order the classifier emits them (Basu et al.'s four classes).
CLASSES: tuple[str, ...] = ("normal", "other_disease", "pneumonia", "covid19")


@dataclass(frozen=True)
class LungSeverity:
    """Cohen et al. 2020 scores for one lung: extent 0-4, opacity 0-3."""

    extent: float
    opacity: float


@dataclass(frozen=True)
class Severity:
    """Cohen et al. 2020 scores: geographic extent 0-8, opacity 0-6 (sum of both lungs)."""

    geographic_extent: float
    opacity: float
    right: LungSeverity
    left: LungSeverity

    def as_json(self) -> dict[str, Any]:
        return {
            "geographic_extent": round(self.geographic_extent, 3),
            "opacity": round(self.opacity, 3),
            "right": {"extent": round(self.right.extent, 3), "opacity": round(self.right.opacity, 3)},
            "left": {"extent": round(self.left.extent, 3), "opacity": round(self.left.opacity, 3)},
        }


@dataclass(frozen=True)
class Quality:
    """The anatomical quality check of the lung outline (:mod:`models.quality`).

    ``assessable``: the severity scores can be reported; ``lungs_found``: the input held
    lung-like fields at all, so the classification can be reported. ``reasons``: codes of the
    failed checks; ``description``: them in words.
    """

    assessable: bool = True
    lungs_found: bool = True
    reasons: tuple[str, ...] = ()
    description: str = "passed"

    def as_json(self) -> dict[str, Any]:
        return {
            "assessable": self.assessable,
            "lungs_found": self.lungs_found,
            "reasons": list(self.reasons),
            "description": self.description,
        }


@dataclass(frozen=True)
class PriorCase:
    """An image the node analysed earlier, as its archive keeps it (UIDs and results only)."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    study_date: date | None
    predicted_class: str
    geographic_extent: float
    opacity: float
    rows: int | None = None  # of the image; None in archives from before it was kept
    columns: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "study_date": self.study_date.isoformat() if self.study_date else None,
            "predicted_class": self.predicted_class,
            "geographic_extent": round(self.geographic_extent, 3),
            "opacity": round(self.opacity, 3),
        }


@dataclass(frozen=True)
class SimilarCase:
    """One of the nearest earlier images in the retrieval embedding (cosine distance 0-2)."""

    case: PriorCase
    distance: float

    def as_json(self) -> dict[str, Any]:
        return {**self.case.as_json(), "distance": round(self.distance, 4)}


@dataclass(frozen=True)
class SeverityChange:
    """This image's severity minus that of an earlier study of the same patient."""

    since: str  # "previous" or "first"
    case: PriorCase
    days: int | None  # from the earlier study date to this one; None when a date is missing
    geographic_extent: float
    opacity: float

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "study_date": self.case.study_date.isoformat() if self.case.study_date else None,
            "sop_instance_uid": self.case.sop_instance_uid,
            "days": self.days,
            "geographic_extent_change": round(self.geographic_extent, 3),
            "opacity_change": round(self.opacity, 3),
        }


@dataclass(frozen=True)
class Triage:
    """The configured urgency rule's decision for one image."""

    urgent: bool
    reasons: tuple[str, ...]  # the rule's conditions that held, e.g. "extent 5.1 >= 4"
    rule: str  # the rule, e.g. "covid19 p >= 0.076 or extent >= 4"
    # False: the quality check withheld every number the rule reads (no lungs, not a chest
    # film): no decision, neither urgent nor routine; a person has to look
    assessed: bool = True

    @property
    def priority(self) -> str:
        """``urgent``, ``routine``, or ``not assessed`` (nothing the rule reads was left)."""
        return "urgent" if self.urgent else "routine" if self.assessed else "not assessed"

    def as_json(self) -> dict[str, Any]:
        return {
            "urgent": self.urgent,
            "assessed": self.assessed,
            "reasons": list(self.reasons),
            "rule": self.rule,
        }


@dataclass
class CaseContext:
    """What the node's archive adds to one analysis: similar earlier cases of other patients,
    the patient's course (earlier studies, oldest first) and the triage decision."""

    similar: list[SimilarCase] = field(default_factory=list)
    course: list[PriorCase] = field(default_factory=list)
    changes: list[SeverityChange] = field(default_factory=list)
    triage: Triage | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "similar_cases": [s.as_json() for s in self.similar],
            "longitudinal": {
                "earlier_studies": len(self.course),
                "changes": [c.as_json() for c in self.changes],
                "course": [c.as_json() for c in self.course],
            }
            if self.course
            else None,
            "triage": self.triage.as_json() if self.triage else None,
        }


@dataclass
class AnalysisResult:
    """Everything the models say about one frontal chest X-ray.

    Arrays are at the input image's resolution (rows x columns of the source).
    ``right`` and ``left`` follow the patient (radiological convention: the
    patient's right lung is on the image's left).
    """

    classification: dict[str, float]
    severity: Severity
    right_lung: np.ndarray  # bool (rows, cols)
    left_lung: np.ndarray  # bool (rows, cols)
    heatmap: np.ndarray  # float32 (rows, cols) in [0, 1]
    image: np.ndarray  # uint8 (rows, cols): the display image the maps refer to
    models: dict[str, str]  # role -> "name@version"
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) spacing
    heatmap_method: str = "gradcam"
    embedding: np.ndarray | None = None  # float32 (DIM,) unit vector for similar-case retrieval
    context: CaseContext | None = None  # set by the node from its archive (node.archive)
    extra: dict[str, Any] = field(default_factory=dict)
    quality: Quality = field(default_factory=Quality)  # False: scores / class not to be reported

    @property
    def predicted_class(self) -> str:
        return max(self.classification, key=self.classification.__getitem__)

    @property
    def reported_class(self) -> str | None:
        """The class the node reports: none when the quality check found nothing lung-like."""
        return self.predicted_class if self.quality.lungs_found else None

    def lung_area_cm2(self, mask: np.ndarray) -> float | None:
        if self.pixel_spacing_mm is None:
            return None
        row_mm, col_mm = self.pixel_spacing_mm
        return float(mask.sum()) * row_mm * col_mm / 100.0

    def lungs_json(self) -> dict[str, Any]:
        right = self.lung_area_cm2(self.right_lung)
        left = self.lung_area_cm2(self.left_lung)
        union = np.logical_or(self.right_lung, self.left_lung)
        return {
            "right_area_cm2": None if right is None else round(right, 2),
            "left_area_cm2": None if left is None else round(left, 2),
            "mask_fraction": round(float(union.mean()), 4),
        }
