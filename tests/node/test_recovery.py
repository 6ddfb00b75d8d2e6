"""Restart recovery: whatever the spool holds but the queue never got is queued on start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import dcmread

from node.db.audit import events
from node.db.engine import session_scope, upgrade
from node.db.tables import Instance, InstanceState
from node.ingest import Ingest
from node.service import Node
from tests.helpers import encoded, make_dx, queued_messages, with_new_uids, write


def test_unqueued_spool_files_are_queued_on_start(node_config, cr_chest: Path) -> None:
    upgrade()
    spool = Ingest(node_config).spool
    spool.ensure()
    # 1. A crash after the spool write, before the database row: a file and no row.
    orphan = with_new_uids(dcmread(cr_chest))
    write(orphan, spool.path_for(orphan.SOPInstanceUID))
    # 2. The broker was down: a row in state "received" that was never queued.
    unqueued = make_dx(cr_chest)
    path = write(unqueued, spool.path_for(unqueued.SOPInstanceUID))
    with session_scope() as session:
        session.add(
            Instance(
                sop_instance_uid=unqueued.SOPInstanceUID,
                sop_class_uid=unqueued.SOPClassUID,
                path=str(path),
                state=InstanceState.RECEIVED,
            )
        )
    # 3. Already queued, and an ineligible lateral: neither is queued again.
    done = make_dx(cr_chest)
    done_path = write(done, spool.path_for(done.SOPInstanceUID))
    lateral = make_dx(cr_chest, view="LL")
    write(lateral, spool.path_for(lateral.SOPInstanceUID))
    with session_scope() as session:
        session.add(
            Instance(
                sop_instance_uid=done.SOPInstanceUID,
                sop_class_uid=done.SOPClassUID,
                path=str(done_path),
                state=InstanceState.QUEUED,
            )
        )
    # 4. A partial write left in tmp/ by the crash.
    (spool.tmp_dir / "abc.part").write_bytes(b"partial")

    node = Node(node_config)
    node.start()
    try:
        queued = {m["kwargs"]["sop_instance_uid"] for m in queued_messages(node_config)}
        assert queued == {orphan.SOPInstanceUID, unqueued.SOPInstanceUID}
        with session_scope() as session:
            assert session.get(Instance, orphan.SOPInstanceUID).state == InstanceState.QUEUED
            assert session.get(Instance, lateral.SOPInstanceUID).state == InstanceState.INELIGIBLE
        assert list(spool.tmp_dir.iterdir()) == []
        swept = events(kind="spool.swept")
        assert swept and "re-queued 2" in swept[-1].message
    finally:
        node.stop()
    # A second start finds nothing left to queue.
    node = Node(node_config)
    node.start()
    node.stop()
    assert len(queued_messages(node_config)) == 2


def test_periodic_sweep_leaves_writes_in_progress_alone(node_config) -> None:
    """The sweep that runs beside the SCP must not delete an association's partial write
    (found as a failed C-STORE when the sweep ran every 2 s during a burst)."""
    upgrade()
    ingest = Ingest(node_config)
    ingest.spool.ensure()
    in_progress = ingest.spool.tmp_dir / "writing.part"
    in_progress.write_bytes(b"half of an instance")
    ingest.sweep()
    assert in_progress.exists()
    ingest.sweep(at_start=True)  # a crash's leftovers, before the SCP listens
    assert not in_progress.exists()


def test_broker_down_keeps_instance_for_the_sweep(node_config, cr_chest: Path) -> None:
    from node.scu import send_datasets
    from node.settings import Destination, configure

    # Nothing listens on port 1: the broker is "down".
    settings = configure(broker_url="redis://127.0.0.1:1/0")
    node = Node(settings)
    host, port = node.start()
    try:
        ds = make_dx(cr_chest)
        statuses = [r.status for r in send_datasets([ds], Destination("CXRNODE", host, port), "M")]
        assert statuses == [0x0000]  # stored safely: the modality is told success
        failed = [e for e in events(kind="job.queued") if e.sop_instance_uid == ds.SOPInstanceUID]
        assert failed and failed[-1].outcome == "failure"
        with session_scope() as session:
            assert session.get(Instance, ds.SOPInstanceUID).state == InstanceState.RECEIVED
        # It waits for analysis: the queue depth (health, metrics, the stalled-workers alert)
        # counted only 'queued' and read 0 through a broker outage.
        from node.metrics import health

        status, body = health(settings)
        assert status == 200 and body["queue_depth"] == 1
    finally:
        node.stop()


def test_stale_queued_job_is_requeued(node_config, cr_chest: Path) -> None:
    """A queued job whose message was lost (broker restarted empty) is queued again."""

    from node.settings import configure

    settings = configure(stale_job_seconds=60)
    ingest = Ingest(settings)
    fresh, stale = make_dx(cr_chest), make_dx(cr_chest)
    _spooled(ingest, [(fresh, InstanceState.QUEUED, 5), (stale, InstanceState.QUEUED, 120)])
    assert ingest.sweep() == 1
    assert [m["kwargs"]["sop_instance_uid"] for m in queued_messages(settings)] == [stale.SOPInstanceUID]
    assert ingest.sweep() == 0  # its clock was reset: not again on the next sweep


def test_database_down_refuses_so_the_modality_retries(node_config, cr_chest: Path) -> None:
    """An instance the audit cannot record is refused (0xA700 at the SCP), not acknowledged
    and left unaccounted for; the spool keeps nothing of it, and the retry succeeds."""
    from node.exceptions import DatabaseUnavailableError
    from node.settings import configure

    settings = configure(database_url=f"sqlite:///{node_config.home / 'never-migrated.sqlite'}")
    ingest = Ingest(settings)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    data = encoded(ds)
    with pytest.raises(DatabaseUnavailableError):
        ingest.receive(data)
    assert not ingest.spool.contains(ds.SOPInstanceUID)
    # Once the database is there, the modality's retry is stored, recorded and queued.
    upgrade(settings.db_url)
    result = ingest.receive(data)
    assert result.status == 0x0000 and result.queued and not result.duplicate
    assert [m["kwargs"]["sop_instance_uid"] for m in queued_messages(settings)] == [ds.SOPInstanceUID]


def test_copy_during_a_failing_record_is_not_acknowledged_as_a_duplicate(
    node_config, cr_chest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A modality that times out resends on a new association while the first copy's database
    write is stalled. The second copy waits for the first: when the first is refused and its
    file removed, the second is stored and recorded in its own right, never acknowledged as a
    duplicate of a file that is about to go."""
    import threading

    from sqlalchemy.exc import OperationalError

    upgrade()
    ingest = Ingest(node_config)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    data = encoded(ds)
    stalled, fail_now = threading.Event(), threading.Event()
    original = Ingest._record_received
    calls = []

    def record(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the first copy: its commit stalls, then fails
            stalled.set()
            fail_now.wait(10)
            raise OperationalError("COMMIT", {}, Exception("database is locked"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Ingest, "_record_received", record)
    outcome: dict[str, object] = {}

    def send(name: str) -> None:
        try:
            outcome[name] = ingest.receive(data)
        except Exception as exc:
            outcome[name] = exc

    first = threading.Thread(target=send, args=("first",), name="first")
    first.start()
    assert stalled.wait(10)
    second = threading.Thread(target=send, args=("second",), name="second")
    second.start()
    second.join(0.5)
    fail_now.set()
    first.join(10)
    second.join(10)

    assert type(outcome["first"]).__name__ == "DatabaseUnavailableError"
    result = outcome["second"]
    assert getattr(result, "status", None) == 0x0000 and not result.duplicate  # type: ignore[union-attr]
    assert ingest.spool.contains(ds.SOPInstanceUID)
    with session_scope() as session:
        assert session.get(Instance, ds.SOPInstanceUID) is not None


def test_sweep_leaves_an_instance_routed_since_its_listing_alone(node_config, cr_chest: Path) -> None:
    """The sweep lists the rows, then works through the spool. An instance whose association
    recorded and queued it in between, and which a worker has finished since, is neither
    queued again nor set back from done."""
    upgrade()
    ingest = Ingest(node_config)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    listed = ingest.spool.stored_uids

    def stored_uids():  # type: ignore[no-untyped-def]
        # after the sweep's listing of rows: the association stores and queues, a worker finishes
        ingest.receive(encoded(ds))
        with session_scope() as session:
            session.get(Instance, ds.SOPInstanceUID).state = InstanceState.DONE
        yield from listed()

    ingest.spool.stored_uids = stored_uids  # type: ignore[method-assign]
    assert ingest.sweep() == 0
    with session_scope() as session:
        assert session.get(Instance, ds.SOPInstanceUID).state == InstanceState.DONE
    assert [m["kwargs"]["sop_instance_uid"] for m in queued_messages(node_config)] == [ds.SOPInstanceUID]


def test_a_running_job_whose_worker_is_gone_is_requeued_at_once(node_config, cr_chest: Path) -> None:
    """A node killed mid-analysis takes its embedded worker with it; on restart the job was
    'running' and waited stale_job_seconds (15 minutes) for a possibly urgent study. The
    start-up sweep of a node with an embedded worker re-queues it at once; a queued one (its
    message still in the broker) and a sweep that cannot know are left alone."""

    from node.settings import configure

    settings = configure(stale_job_seconds=900)
    ingest = Ingest(settings)
    running, queued = make_dx(cr_chest), make_dx(cr_chest)
    _spooled(ingest, [(running, InstanceState.RUNNING, 30), (queued, InstanceState.QUEUED, 30)])
    assert ingest.sweep(at_start=True) == 0  # separate workers may still hold it
    assert ingest.sweep(at_start=True, running_lost=True) == 1
    assert [m["kwargs"]["sop_instance_uid"] for m in queued_messages(settings)] == [running.SOPInstanceUID]


def _spooled(ingest: Ingest, rows: list[tuple[object, str, int]]) -> None:
    """Each data set in the spool with a database row in ``state``, last updated ``age`` s ago."""
    from datetime import timedelta

    from node.db.tables import utcnow

    upgrade()
    ingest.spool.ensure()
    with session_scope() as session:
        for ds, state, age in rows:
            path = write(ds, ingest.spool.path_for(ds.SOPInstanceUID))  # type: ignore[attr-defined]
            session.add(
                Instance(
                    sop_instance_uid=ds.SOPInstanceUID,  # type: ignore[attr-defined]
                    sop_class_uid=ds.SOPClassUID,  # type: ignore[attr-defined]
                    path=str(path),
                    state=state,
                    updated_at=utcnow() - timedelta(seconds=age),
                )
            )


def test_a_node_that_cannot_start_says_it_stopped(node_config) -> None:  # type: ignore[no-untyped-def]
    """The audit said 'node.started' and never 'node.stopped' when the start failed after it
    (the port taken, a spool it cannot make): an admin tailing it saw a node that was not there."""
    import socket

    from node.settings import configure

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        node = Node(configure(port=taken.getsockname()[1]))
        with pytest.raises(OSError):
            node.start()
    started, stopped = events(kind="node.started"), events(kind="node.stopped")
    assert len(started) == 1 and len(stopped) == 1
    assert stopped[0].outcome == "failure" and "did not start: OSError" in stopped[0].message


@pytest.mark.parametrize("embedded", [True, False])
def test_the_start_up_sweep_knows_whether_running_jobs_are_lost(
    node_config, monkeypatch: pytest.MonkeyPatch, embedded: bool
) -> None:  # type: ignore[no-untyped-def]
    """Only a node that runs its own worker (the orphan stopped first) knows that the jobs left
    running died with the last node; with separate workers they may still be running."""
    from node.settings import configure

    seen: list[dict[str, bool]] = []

    def sweep(self: Ingest, **kwargs: bool) -> int:
        seen.append(kwargs)
        raise RuntimeError("enough")  # the rest of the start is not this test's

    monkeypatch.setattr(Ingest, "sweep", sweep)
    with pytest.raises(RuntimeError):
        Node(configure(embedded_worker=embedded)).start()
    assert seen == [{"at_start": True, "running_lost": embedded}]


def test_the_audit_says_when_the_last_run_was_killed_and_what_was_migrated(node_config) -> None:  # type: ignore[no-untyped-def]
    """After a kill -9 the audit had two node.started rows and nothing between them, and a
    migration on start left no trace (found by a black-box review of an upgrade)."""
    import subprocess
    import sys

    from node.db.engine import code_revisions
    from node.settings import configure

    settings = configure(embedded_worker=False, metrics_port=0)
    upgrade(settings.db_url, "0006")
    first = Node(settings)
    first.start()
    first.stop()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    Node(settings).running_file.write_text(dead.stdout)  # a node of this home killed with -9
    again = Node(settings)
    again.start()
    again.stop()
    # in a container every run is PID 1: a file naming this very PID was left by a dead one
    Node(settings).running_file.write_text(f"{os.getpid()}\n")
    same_pid = Node(settings)
    same_pid.start()
    running = Node(settings)  # a second node of the home while the first runs: no crash
    running.start()
    running.stop()
    assert same_pid.running_file.is_file()  # still the first one's
    same_pid.stop()
    clean = Node(settings)
    clean.start()
    clean.stop()
    started = events(kind="node.started")
    assert [e.outcome for e in started] == ["info", "warning", "warning", "info", "info"]
    assert f"database schema 0006 upgraded to {code_revisions()[0]}" in started[0].message
    assert all("ended without a stop (killed or crashed)" in e.message for e in started[1:3])
    assert not any("upgraded" in e.message or "ended without" in e.message for e in started[3:])


def test_an_embedded_worker_that_keeps_exiting_is_restarted_ever_more_slowly() -> None:
    """A worker that cannot start (a database newer than its code) was started again twice a
    second for good; one that ran a while is restarted at once, as before."""
    from node.service import RestartBackoff

    backoff = RestartBackoff(stable=60.0, cap=60.0)
    assert [backoff.next_delay(0.5) for _ in range(8)] == [1, 3, 7, 15, 31, 60, 60, 60]
    assert backoff.next_delay(3600.0) == 0  # ran for an hour: a fresh fault, no wait
    assert backoff.next_delay(1.0) == 1
