"""Queueing analysis jobs through Celery (the task and its payload: :mod:`workers.contract`)."""

from __future__ import annotations

import logging
from pathlib import Path

from node.exceptions import QueueError
from node.settings import Settings, get_settings
from workers.contract import ANALYZE_TASK, analysis_payload

logger = logging.getLogger(__name__)

# Fail fast when the broker is down: the instance is safe in the spool and the
# sweep re-queues it, so the modality's association must not wait on retries.
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def enqueue_analysis(sop_instance_uid: str, path: Path | str, settings: Settings | None = None) -> str:
    """Send the analysis task for one stored instance; returns the task id.

    Raises QueueError when the broker cannot take it.
    """
    from workers.app import get_app  # deferred: Celery is not needed to import the node

    settings = settings or get_settings()
    try:
        result = get_app().send_task(
            ANALYZE_TASK,
            kwargs=analysis_payload(sop_instance_uid, path),
            queue=settings.model_queue,
            retry=True,
            retry_policy=_RETRY_POLICY,
        )
    except Exception as exc:  # kombu/redis raise many types for "broker down"
        raise QueueError(f"{type(exc).__name__}: {exc}") from exc
    logger.info("queued %s for SOP instance %s", result.id, sop_instance_uid)
    return str(result.id)
