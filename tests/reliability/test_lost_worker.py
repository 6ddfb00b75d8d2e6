"""An image that kills the worker analysing it is failed with its reason after a few tries,
not delivered again for ever; one that killed a worker once or twice is still analysed."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from node.db.audit import events
from node.db.engine import session_scope, upgrade
from node.db.tables import Instance, InstanceState
from node.export import outbox_rows
from node.ingest import Ingest
from node.settings import Settings
from tests.helpers import encoded, make_dx
from workers import pipeline

KILLED = 137  # what a child killed for memory exits with


def _killed_in_the_model(sop_instance_uid: str, path: str) -> None:
    """A worker process that dies inside the model, as the kernel's OOM killer would end it."""

    def out_of_memory(*args: object, **kwargs: object) -> None:
        os._exit(KILLED)

    pipeline.analyze_image = out_of_memory  # type: ignore[assignment]
    pipeline.process_instance(sop_instance_uid, path)


def _received(settings: Settings, cr_chest: Path) -> tuple[str, str]:
    upgrade()
    ingest = Ingest(settings)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    return str(ds.SOPInstanceUID), str(ingest.receive(encoded(ds)).path)


def _kill_workers(uid: str, path: str, times: int) -> None:
    fork = multiprocessing.get_context("fork")
    for _ in range(times):
        worker = fork.Process(target=_killed_in_the_model, args=(uid, path))
        worker.start()
        worker.join(120)
        assert worker.exitcode == KILLED


def _state(uid: str) -> str:
    with session_scope() as session:
        row = session.get(Instance, uid)
        assert row is not None
        return row.state


def test_an_image_that_kills_its_worker_each_time_is_failed_and_kept(node_config, cr_chest: Path) -> None:
    uid, path = _received(node_config, cr_chest)
    _kill_workers(uid, path, node_config.max_lost_starts)
    assert _state(uid) == InstanceState.RUNNING
    assert pipeline.lost_starts(uid) == node_config.max_lost_starts

    # The next delivery (Celery's redelivery or the sweep's re-queue) does not start it again.
    assert pipeline.process_instance(uid, path) is None
    assert _state(uid) == InstanceState.FAILED
    failed = [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
    assert failed and "started 3 times and never ended" in failed[-1].message
    assert len([e for e in events(kind="job.started") if e.sop_instance_uid == uid]) == 3
    assert Path(path).is_file()  # received, so kept
    assert not outbox_rows()


def test_an_image_that_killed_fewer_workers_is_analysed(node_config, cr_chest: Path) -> None:
    uid, path = _received(node_config, cr_chest)
    _kill_workers(uid, path, node_config.max_lost_starts - 1)
    assert pipeline.process_instance(uid, path) is not None
    assert _state(uid) == InstanceState.DONE
    assert pipeline.lost_starts(uid) == 0  # ended by job.succeeded
