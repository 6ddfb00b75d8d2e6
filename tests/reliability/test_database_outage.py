"""The audit database goes away in the middle of a burst of C-STOREs.

PostgreSQL (a private cluster: crashed and restarted, or stopped for a while)
and SQLite (its file made immutable with ``chattr +i``: as root, chmod is not
enough, permission checks are bypassed). Either way: an instance the node
cannot record is refused with 0xA700 (PS3.4 B.2.3, Out of Resources: the
modality keeps it and retries), every acknowledged instance is stored and
recorded exactly once, and the node answers again once the database is back.
"""

from __future__ import annotations

import copy
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import func, select

from node.db.engine import session_scope
from node.db.tables import AuditEvent, Instance
from node.service import Node
from node.settings import Settings, configure
from tests.helpers import echo_ok, free_port, make_dx, new_uid, queued_messages, wait_until
from tests.postgres import PrivatePostgres

pytestmark = pytest.mark.timeout(300)

BURST = 40


@dataclass
class Modality:
    """Sends each instance until the node answers 0x0000, as a modality does with 0xA7xx."""

    port: int
    instances: list[Dataset]
    statuses: list[tuple[str, int]] = field(default_factory=list)  # every answer, in order
    acked: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    deadline_s: float = 240.0

    def run(self) -> None:
        ae = AE(ae_title="MODALITY")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(self.instances[0].SOPClassUID, self.instances[0].file_meta.TransferSyntaxUID)
        deadline = time.monotonic() + self.deadline_s
        assoc = None
        for ds in self.instances:
            while time.monotonic() < deadline:
                if assoc is None or not assoc.is_established:
                    assoc = ae.associate("127.0.0.1", self.port, ae_title="CXRNODE")
                    if not assoc.is_established:
                        time.sleep(0.2)  # a modality's retry interval, not a test's wait
                        continue
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status else -1  # -1: no answer (aborted)
                self.statuses.append((ds.SOPInstanceUID, code))
                if code == 0x0000:
                    self.acked.append(ds.SOPInstanceUID)
                    break
                if code != -1 and code & 0xFF00 != 0xA700:
                    self.gave_up.append(ds.SOPInstanceUID)  # a failure status: not retried
                    break
                time.sleep(0.2)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def refused(self) -> list[int]:
        return [code for _, code in self.statuses if code not in (0x0000,)]


def burst(cr_chest: Path, count: int = BURST) -> list[Dataset]:
    template = make_dx(cr_chest)
    template.PixelData = template.PixelData[: 2 * 128 * 128]  # small: the database is the subject
    template.Rows = template.Columns = 128
    out = []
    for _ in range(count):
        ds = copy.deepcopy(template)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = new_uid(), new_uid(), new_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def metric(settings: Settings, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=30) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def outage_during_burst(
    settings: Settings,
    cr_chest: Path,
    go_away: Callable[[], None],
    come_back: Callable[[], None],
    outage_seconds: float,
) -> tuple[Node, Modality]:
    """Start a node, send a burst, take the database away after a quarter of it."""
    node = Node(settings)
    _, port = node.start()
    modality = Modality(port, burst(cr_chest))
    sender = threading.Thread(target=modality.run, name="modality")
    sender.start()
    try:
        wait_until(lambda: len(modality.acked) >= BURST // 4, timeout=120, what="first acks")
        go_away()
        # The node refuses rather than acknowledging what it cannot record.
        wait_until(lambda: modality.refused(), timeout=60, interval=0.1, what="a refusal")
        if outage_seconds:
            threading.Event().wait(outage_seconds)  # the outage itself is the scenario
        come_back()
        sender.join(timeout=modality.deadline_s)
        assert not sender.is_alive(), "the modality did not finish its burst"
    except BaseException:
        come_back()
        sender.join(timeout=modality.deadline_s)
        node.stop()
        raise
    return node, modality


def check_accounted(node: Node, modality: Modality) -> None:
    """Every instance acknowledged once, stored once, recorded once; refusals were 0xA7xx."""
    sent = {ds.SOPInstanceUID for ds in modality.instances}
    assert not modality.gave_up, modality.gave_up
    assert set(modality.acked) == sent and len(modality.acked) == len(sent)
    refused = modality.refused()
    assert refused and all(code & 0xFF00 == 0xA700 for code in refused), Counter(refused)
    assert set(node.ingest.spool.stored_uids()) == sent
    with session_scope() as session:
        rows = list(session.scalars(select(Instance.sop_instance_uid)))
        received = Counter(
            session.scalars(select(AuditEvent.sop_instance_uid).where(AuditEvent.kind == "instance.received"))
        )
        duplicates = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.kind == "instance.duplicate")
        )
    assert sorted(rows) == sorted(sent)  # one row each
    assert set(received) == sent and set(received.values()) == {1}, received.most_common(3)
    assert duplicates == 0
    # Whatever was recorded but not yet queued when the database went is queued by the sweep.
    node.ingest.sweep()
    assert {m["kwargs"]["sop_instance_uid"] for m in queued_messages(node.settings)} == sent
    assert echo_ok(node.address[1])  # type: ignore[index]


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres().init()
    yield pg
    pg.destroy()


@pytest.mark.parametrize(
    ("mode", "outage_seconds"),
    [
        pytest.param("immediate", 0.0, id="crash-and-restart"),
        pytest.param("fast", 5.0, id="down-5s"),
        pytest.param("fast", 60.0, id="down-60s", marks=pytest.mark.slow),
    ],
)
def test_postgres_goes_away_mid_burst(
    node_config: Settings,
    private_postgres: PrivatePostgres,
    cr_chest: Path,
    mode: str,
    outage_seconds: float,
) -> None:
    settings = configure(database_url=private_postgres.url, metrics_port=free_port())
    down_seen: list[float | None] = []

    def go_away() -> None:
        private_postgres.stop(mode)
        down_seen.append(metric(settings, "cxr_node_database_up"))

    def come_back() -> None:
        if not private_postgres.running():
            private_postgres.start()

    node, modality = outage_during_burst(settings, cr_chest, go_away, come_back, outage_seconds)
    try:
        assert down_seen == [0.0]  # what the DatabaseDown alert reads
        check_accounted(node, modality)
        assert metric(settings, "cxr_node_database_up") == 1.0
    finally:
        node.stop()


def _chattr(flag: str, paths: list[Path]) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True, timeout=30)


def test_sqlite_made_read_only_mid_burst(node_config: Settings, cr_chest: Path) -> None:
    """``chattr +i`` on the database file and its WAL: writes fail even for root.

    Not the ``-shm`` file: SQLite maps it, and an immutable mapping kills the
    process with SIGBUS on the next write (found while writing this test).
    """
    settings = configure(metrics_port=free_port())
    db = Path(settings.db_url.removeprefix("sqlite:///"))
    frozen: list[Path] = []

    def go_away() -> None:
        frozen.extend(p for p in (db, db.with_name(db.name + "-wal")) if p.exists())
        _chattr("+i", frozen)

    def come_back() -> None:
        if frozen:
            _chattr("-i", frozen)
            frozen.clear()

    node, modality = outage_during_burst(settings, cr_chest, go_away, come_back, 2.0)
    try:
        check_accounted(node, modality)
    finally:
        node.stop()
