"""The export outbox against a real Orthanc: delivery, back-off, dead letters, retry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from node.db.audit import events
from node.db.engine import upgrade
from node.db.tables import OutboxState
from node.export import OutputFile, add_to_outbox, backoff_seconds, deliver_due, outbox_rows, retry_dead
from node.settings import configure
from tests.helpers import encoded, make_dx, wait_until, write
from tests.orthanc import Orthanc


def output_file(tmp_path: Path, cr_chest: Path, kind: str = "sc") -> OutputFile:
    ds = make_dx(cr_chest)
    path = write(ds, tmp_path / f"{kind}-{ds.SOPInstanceUID}.dcm")
    return OutputFile(kind, path, ds.SOPInstanceUID, ds.StudyInstanceUID, "1.2.3.4")


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_seconds(n, 5.0) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_seconds(30, 5.0) == 3600.0


def test_delivers_to_orthanc_once(node_config, orthanc: Orthanc, tmp_path: Path, cr_chest: Path) -> None:
    settings = configure(destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    upgrade()
    output = output_file(tmp_path, cr_chest)
    assert add_to_outbox([output], settings) == 1
    assert add_to_outbox([output], settings) == 0  # a retried task adds nothing
    assert deliver_due(settings) == {"sent": 1}
    assert deliver_due(settings) == {}  # nothing left to send
    stored = orthanc.study_instances(output.study_instance_uid)
    assert [i["sop_instance_uid"] for i in stored] == [output.sop_instance_uid]
    sent = events(kind="export.sent")
    assert len(sent) == 1 and sent[0].duration_ms is not None and "ORTHANC@" in sent[0].message


def test_orthanc_down_then_back(node_config, orthanc: Orthanc, tmp_path: Path, cr_chest: Path) -> None:
    settings = configure(destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"], export_backoff_seconds=0.2)
    upgrade()
    orthanc.stop()
    output = output_file(tmp_path, cr_chest)
    add_to_outbox([output], settings)
    assert deliver_due(settings) == {"failed": 1}
    row = outbox_rows()[0]
    assert (row.state, row.attempts) == (OutboxState.PENDING, 1)
    assert deliver_due(settings) == {}  # backing off: not due yet
    orthanc.start()
    wait_until(lambda: deliver_due(settings).get("sent"), timeout=10, what="delivery after restart")
    assert [i["sop_instance_uid"] for i in orthanc.study_instances(output.study_instance_uid)] == [
        output.sop_instance_uid
    ]
    assert [e.kind for e in events(sop_instance_uid=output.sop_instance_uid)] == [
        "export.failed",
        "export.sent",
    ]


def test_dead_letter_and_retry_command(node_config, orthanc: Orthanc, tmp_path: Path, cr_chest: Path) -> None:
    settings = configure(
        destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"],
        export_backoff_seconds=0.05,
        export_max_attempts=2,
    )
    upgrade()
    orthanc.stop()
    output = output_file(tmp_path, cr_chest)
    add_to_outbox([output], settings)
    assert deliver_due(settings) == {"failed": 1}
    wait_until(lambda: deliver_due(settings).get("dead"), timeout=10, what="dead letter")
    assert outbox_rows()[0].state == OutboxState.DEAD
    assert "gave up after 2 attempts" in events(kind="export.dead")[-1].message
    cli = [sys.executable, "-m", "node.cli", "--home", str(settings.home)]
    listed = subprocess.run([*cli, "export", "list", "--state", "dead"], capture_output=True, text=True)
    assert listed.returncode == 0 and "dead" in listed.stdout and output.sop_instance_uid in listed.stdout
    retried = subprocess.run([*cli, "export", "retry"], capture_output=True, text=True)
    assert retried.returncode == 0 and "1 export(s)" in retried.stdout, retried.stderr
    orthanc.start()
    assert deliver_due(settings) == {"sent": 1}
    assert outbox_rows()[0].state == OutboxState.SENT


def test_retry_by_id_leaves_a_row_being_sent_alone(node_config, tmp_path: Path, cr_chest: Path) -> None:
    """`cxr-node export retry ID` on a row in flight would have it claimed again and sent twice;
    only dead rows (and rows waiting for their next attempt) get fresh attempts."""
    from node.db.engine import session_scope
    from node.db.tables import OutboxItem

    settings = configure(destinations=["A@127.0.0.1:1", "B@127.0.0.1:2", "C@127.0.0.1:3", "D@127.0.0.1:4"])
    upgrade()
    add_to_outbox([output_file(tmp_path, cr_chest)], settings)
    states = (OutboxState.SENDING, OutboxState.SENT, OutboxState.DEAD, OutboxState.PENDING)
    with session_scope() as session:
        rows = list(session.scalars(select(OutboxItem).order_by(OutboxItem.id)))
        for row, state in zip(rows, states, strict=True):
            row.state, row.attempts = state, 3
        ids = [row.id for row in rows]
    assert retry_dead(ids) == 2
    after = {row.destination: (row.state, row.attempts) for row in outbox_rows()}
    assert after == {
        "A@127.0.0.1:1": (OutboxState.SENDING, 3),
        "B@127.0.0.1:2": (OutboxState.SENT, 3),
        "C@127.0.0.1:3": (OutboxState.PENDING, 0),
        "D@127.0.0.1:4": (OutboxState.PENDING, 0),
    }


def test_unreadable_output_goes_dead_at_once(node_config, orthanc: Orthanc, tmp_path: Path) -> None:
    settings = configure(destinations=[f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"])
    upgrade()
    missing = OutputFile("sr", tmp_path / "gone.dcm", "1.2.3.9", "1.2.3", "1.2.3.4")
    add_to_outbox([missing], settings)
    assert deliver_due(settings) == {"dead": 1}


def test_each_destination_gets_its_own_row(node_config, tmp_path: Path, cr_chest: Path) -> None:
    settings = configure(destinations=["A@127.0.0.1:1", "B@127.0.0.1:2"])
    upgrade()
    assert add_to_outbox([output_file(tmp_path, cr_chest)], settings) == 2
    assert sorted(r.destination for r in outbox_rows()) == ["A@127.0.0.1:1", "B@127.0.0.1:2"]
    assert dcmread(outbox_rows()[0].path).SOPInstanceUID


def test_concurrent_delivery_of_one_task_is_retried_not_failed(
    node_config, cr_chest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries of one task (a sweep's re-queue beside a late original) can both get past
    "already done"; the second to write the outbox row meets the unique constraint. That is a
    retry (which then finds the instance done), not a failed job; and a failure never undoes
    a done instance."""
    from sqlalchemy.exc import IntegrityError

    from node.db.engine import session_scope
    from node.db.tables import Instance, InstanceState
    from node.ingest import Ingest
    from workers import pipeline
    from workers.exceptions import TemporaryError

    upgrade()
    ingest = Ingest(node_config)
    ingest.spool.ensure()
    ds = make_dx(cr_chest)
    received = ingest.receive(encoded(ds))
    uid = str(ds.SOPInstanceUID)

    def first_wrote_it(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise IntegrityError("INSERT INTO outbox", {}, Exception("UNIQUE constraint failed"))

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "add_to_outbox", first_wrote_it)
        with pytest.raises(TemporaryError):
            pipeline.process_instance(uid, str(received.path))
        with session_scope() as session:
            assert session.get(Instance, uid).state != InstanceState.FAILED
        assert not [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
        assert [e for e in events(kind="job.retried") if e.sop_instance_uid == uid]
        # The same clash on the retry is no race: the job fails, with the reason, and is not
        # retried (or re-queued by the sweep) for ever.
        assert pipeline.process_instance(uid, str(received.path), attempt=2) is None
        with session_scope() as session:
            assert session.get(Instance, uid).state == InstanceState.FAILED
        failed = [e for e in events(kind="job.failed") if e.sop_instance_uid == uid]
        assert failed and "constraint" in failed[-1].message

    assert pipeline.process_instance(uid, str(received.path)) is not None  # the retry
    pipeline._set_state(uid, InstanceState.FAILED, "a late second delivery failed")
    with session_scope() as session:
        assert session.get(Instance, uid).state == InstanceState.DONE
