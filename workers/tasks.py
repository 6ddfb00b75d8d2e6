"""Thin Celery tasks: take identifiers, call plain functions, retry only on named errors."""

from __future__ import annotations

import logging

from celery import shared_task

from workers.contract import ANALYZE_TASK

logger = logging.getLogger(__name__)


@shared_task(name=ANALYZE_TASK, bind=True, max_retries=5)
def analyze_instance(self, sop_instance_uid: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """Analyse one stored instance and export the results (workers.pipeline)."""
    from workers.exceptions import TemporaryError
    from workers.pipeline import already_done, process_instance

    if already_done(sop_instance_uid):
        # A re-queued duplicate (sweep after a lost message): results exist already.
        logger.info("SOP instance %s already analysed; skipping", sop_instance_uid)
        return
    try:
        process_instance(sop_instance_uid, path, attempt=self.request.retries + 1)
    except TemporaryError as exc:
        raise self.retry(exc=exc, countdown=min(60, 5 * 2**self.request.retries)) from exc
