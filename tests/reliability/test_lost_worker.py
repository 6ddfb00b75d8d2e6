"""An image that kills the worker analysing it is failed with its reason after a few tries,
not delivered again for ever; one that killed a worker once or twice is still analysed. A job
whose retries are spent fails with its reason; a failed job is not started again."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

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
    assert pipeline.lost_starts(uid) == (node_config.max_lost_starts, False)
    # A suspect now: tried once more, alone in its worker process; and lost again.
    _kill_workers(uid, path, 1)
    started = [e for e in events(kind="job.started") if e.sop_instance_uid == uid]
    assert pipeline.ALONE in started[-1].message and pipeline.ALONE not in started[0].message
    # each re-queued start says how many were lost before it (all read "attempt 1")
    assert "re-queued" not in started[0].message
    assert "re-queued: 1 earlier start(s) lost with their worker" in started[1].message
    assert pipeline.lost_starts(uid) == (node_config.max_lost_starts + 1, True)

    # The next delivery (Celery's redelivery or the sweep's re-queue) does not start it again.
    assert pipeline.process_instance(uid, path) is None
    assert _state(uid) == InstanceState.FAILED
    failed = [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
    assert (
        failed and "started 4 times in a row with no end recorded, the last time alone" in failed[-1].message
    )
    assert len([e for e in events(kind="job.started") if e.sop_instance_uid == uid]) == 4
    assert Path(path).is_file()  # received, so kept
    assert not outbox_rows()


def test_an_image_lost_beside_a_killer_is_analysed_when_tried_alone(node_config, cr_chest: Path) -> None:
    """With a threads pool every task in flight dies with the process: an innocent image lost
    that way as often as a killer is tried once more alone, and analysed."""
    uid, path = _received(node_config, cr_chest)
    _kill_workers(uid, path, node_config.max_lost_starts)  # as if beside the killer each time
    assert pipeline.process_instance(uid, path) is not None
    assert _state(uid) == InstanceState.DONE
    started = [e for e in events(kind="job.started") if e.sop_instance_uid == uid]
    assert pipeline.ALONE in started[-1].message


def test_a_suspect_runs_alone_in_its_worker_process() -> None:
    """:class:`workers.pipeline.Slots`: a suspect waits for the tasks in flight, and none starts
    beside it."""
    import threading
    import time

    slots, log = pipeline.Slots(), []
    first_in, release = threading.Event(), threading.Event()

    def task(name: str, alone: bool, hold: threading.Event | None = None) -> None:
        with slots.hold(alone):
            log.append(f"{name} in")
            if hold is not None:
                first_in.set()
                hold.wait(5)
            time.sleep(0.05)
            log.append(f"{name} out")

    a = threading.Thread(target=task, args=("a", False, release))
    a.start()
    assert first_in.wait(5)
    suspect = threading.Thread(target=task, args=("suspect", True))
    suspect.start()
    time.sleep(0.1)
    late = threading.Thread(target=task, args=("late", False))
    late.start()
    time.sleep(0.1)
    assert log == ["a in"]  # the suspect waits for a; the late one waits for the suspect
    release.set()
    for t in (a, suspect, late):
        t.join(5)
    assert log == ["a in", "a out", "suspect in", "suspect out", "late in", "late out"]


def test_an_image_that_killed_fewer_workers_is_analysed(node_config, cr_chest: Path) -> None:
    uid, path = _received(node_config, cr_chest)
    _kill_workers(uid, path, node_config.max_lost_starts - 1)
    assert pipeline.process_instance(uid, path) is not None
    assert _state(uid) == InstanceState.DONE
    assert pipeline.lost_starts(uid) == (0, False)  # ended by job.succeeded


def _task(uid: str, path: str) -> None:
    """One delivery of the Celery task, run here (its own retries included)."""
    from workers.app import get_app
    from workers.tasks import analyze_instance

    get_app()
    analyze_instance.apply(kwargs={"sop_instance_uid": uid, "path": path})


def _kinds(uid: str) -> list[str]:
    return [e.kind for e in events(sop_instance_uid=uid) if e.kind.startswith("job.")]


def test_a_failed_image_is_not_started_again_by_a_stray_delivery(node_config, cr_chest: Path) -> None:
    uid, path = _received(node_config, cr_chest)
    _kill_workers(uid, path, node_config.max_lost_starts + 1)  # the last time alone
    _task(uid, path)  # fails it, without starting it
    assert _state(uid) == InstanceState.FAILED
    _task(uid, path)  # a second copy of the message (the sweep's re-queue beside a redelivery)
    assert _kinds(uid).count("job.started") == node_config.max_lost_starts + 1
    assert _kinds(uid).count("job.failed") == 1


def test_a_fault_that_outlasts_the_retries_fails_the_job(
    node_config, cr_chest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error on this instance alone that does not clear (e.g. a statement timeout on
    its archive query): after Celery's retries the job fails with the reason, instead of staying
    running for the sweep to re-queue for ever."""
    from sqlalchemy.exc import OperationalError

    uid, path = _received(node_config, cr_chest)

    def timeout(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT", {}, Exception("canceling statement due to statement timeout"))

    monkeypatch.setattr(pipeline.archive, "case_context", timeout)
    _task(uid, path)
    # Retries spent once: left running for the sweep's one re-queue (an outage may be over by then).
    assert _state(uid) == InstanceState.RUNNING
    assert _kinds(uid).count("job.started") == 6  # max_retries 5, + the first
    assert _kinds(uid).count("job.retried") == 7  # one per attempt, and "retries spent"
    assert not [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
    _task(uid, path)  # the sweep's re-queue: spent again, so the fault did not clear
    assert _state(uid) == InstanceState.FAILED
    failed = [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
    assert len(failed) == 1 and failed[0].message.startswith("retries spent twice: 6 attempts")
    assert "statement timeout" in failed[0].message
    _task(uid, path)  # and no third round
    assert _kinds(uid).count("job.started") == 12
