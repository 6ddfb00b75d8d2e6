"""What one analysis of one image produces: the contract between the models and
the DICOM outputs (SR, SC, SEG) and the ``analyze --json`` object.

Deliberately free of torch so the node can import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def predicted_class(self) -> str:
        return max(self.classification, key=self.classification.__getitem__)

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
