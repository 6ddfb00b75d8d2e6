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
    from workers.pipeline import already_ended, give_up, process_instance

    ended = already_ended(sop_instance_uid)
    if ended:
        # A re-queued duplicate (sweep after a lost message, a redelivery): done or failed already.
        logger.info("SOP instance %s already %s; skipping", sop_instance_uid, ended)
        return
    attempt = self.request.retries + 1
    try:
        process_instance(sop_instance_uid, path, attempt=attempt)
    except TemporaryError as exc:
        if self.request.retries >= self.max_retries:
            # Retries spent: the sweep re-queues it once; spent again, the job fails with the
            # fault instead of running for ever. (With the database away nothing can be written:
            # the instance stays running, and the sweep re-queues it once the database is back.)
            give_up(sop_instance_uid, f"{attempt} attempts, the last: {exc}")
            return
        raise self.retry(exc=exc, countdown=min(60, 5 * 2**self.request.retries)) from exc
