"""All DICOM outputs of one analysis, keyed by kind."""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset

from models.result import AnalysisResult
from node.dicom.sc import build_sc
from node.dicom.seg import build_seg
from node.dicom.sr import build_sr

logger = logging.getLogger(__name__)


def build_outputs(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
    include_seg: bool = True,
) -> dict[str, Dataset]:
    """Build the SR, the SC and (optionally) the SEG of one analysis.

    Parameters
    ----------
    source
        The analysed CR or DX image; only its header is read.
    result
        What the models said about it.
    algorithm_name, algorithm_version
        From the model registry; the version also enters every output UID.
    include_seg
        Also build the lung Segmentation.

    Returns
    -------
    dict[str, pydicom.dataset.Dataset]
        ``{"sr": ..., "sc": ..., "seg": ...}``; each in the source's study,
        in its own series, with UIDs derived from the source SOP Instance
        UID, the kind and ``algorithm_version``. Errors of the SR and SC
        propagate; the SEG is optional, so a failure to build it is logged
        and ``"seg"`` is left out.
    """
    outputs: dict[str, Dataset] = {
        "sr": build_sr(source, result, algorithm_name, algorithm_version),
        "sc": build_sc(source, result, algorithm_name, algorithm_version),
    }
    if include_seg:
        try:
            outputs["seg"] = build_seg(source, result, algorithm_name, algorithm_version)
        except (ValueError, TypeError, AttributeError):
            logger.warning(
                "no SEG for source %s: highdicom rejected it",
                source.get("SOPInstanceUID"),
                exc_info=True,
            )
    return outputs
