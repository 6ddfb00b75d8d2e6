"""All DICOM outputs of one analysis, keyed by kind."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from models.result import AnalysisResult
from node.dicom.sc import build_sc
from node.dicom.seg import build_seg
from node.dicom.sr import build_sr

logger = logging.getLogger(__name__)


KINDS = ("sr", "sc", "seg")  # in the order they are built and sent: the SR carries the triage decision


def build_outputs(
    source: Dataset,
    result: AnalysisResult,
    algorithm_name: str,
    algorithm_version: str,
    include_seg: bool = True,
    *,
    kinds: Sequence[str] = KINDS,
    sc_max_size: int = 0,
    sc_transfer_syntax_uid: str = ExplicitVRLittleEndian,
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
        Also build the lung Segmentation (only of an outline that passed the quality check).
    kinds
        Which of them to build (the worker builds and sends the SR first).
    sc_max_size, sc_transfer_syntax_uid
        The SC's longest side (0: the source's size) and transfer syntax
        (:func:`node.dicom.sc.build_sc`).

    Returns
    -------
    dict[str, pydicom.dataset.Dataset]
        ``{"sr": ..., "sc": ..., "seg": ...}``; each in the source's study,
        in its own series, with UIDs derived from the source SOP Instance
        UID, the kind and ``algorithm_version``. Errors of the SR and SC
        propagate; the SEG is optional, so a failure to build it is logged
        and ``"seg"`` is left out.
    """
    outputs: dict[str, Dataset] = {}
    if "sr" in kinds:
        outputs["sr"] = build_sr(source, result, algorithm_name, algorithm_version)
    if "sc" in kinds:
        outputs["sc"] = build_sc(
            source,
            result,
            algorithm_name,
            algorithm_version,
            max_size=sc_max_size,
            transfer_syntax_uid=sc_transfer_syntax_uid,
        )
    if include_seg and "seg" in kinds and result.quality.assessable:  # no outline that failed the check
        try:
            outputs["seg"] = build_seg(source, result, algorithm_name, algorithm_version)
        except (ValueError, TypeError, AttributeError):
            logger.warning(
                "no SEG for source %s: highdicom rejected it",
                source.get("SOPInstanceUID"),
                exc_info=True,
            )
    return outputs
