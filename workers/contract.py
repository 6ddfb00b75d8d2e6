"""The analysis task: the one contract between the node (producer) and the workers (consumer).

The node queues ``ANALYZE_TASK`` with an :class:`AnalysisPayload` as keyword
arguments; a worker on any host runs it. Identifiers only, never data sets
(the instance is read from the shared spool). This module imports nothing of
the project's own, so either side can change without the other importing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

ANALYZE_TASK = "cxr_node.analyze_instance"


class AnalysisPayload(TypedDict):
    """Keyword arguments of :data:`ANALYZE_TASK`."""

    sop_instance_uid: str  # the stored instance, as audited
    path: str  # its file in the spool, readable by every worker


def analysis_payload(sop_instance_uid: str, path: Path | str) -> AnalysisPayload:
    return {"sop_instance_uid": sop_instance_uid, "path": str(path)}
