"""The cxr-node command as an operator runs it: real processes, real ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.helpers import CLI, dcmtk, run, storescu, wait_until


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    return {**clean, "CXR_NODE_HOME": str(tmp_path / "home"), "CXR_NODE_PORT": "0"}


def listening_port(log: Path) -> int | None:
    match = re.search(r"CXRNODE listening on 127\.0\.0\.1:(\d+)", log.read_text())
    return int(match.group(1)) if match else None


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """`cxr-node serve --no-worker` in its own process; yields its port."""
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*CLI, "serve", "--no-worker"], env=env, stdout=out, stderr=out)
    try:
        port = wait_until(lambda: proc.poll() is None and listening_port(log), timeout=30, interval=0.1)
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()


def test_serve_storescu_spool_audit_queue(served, env, cr_chest: Path, tmp_path: Path) -> None:
    """The issue's 'done when': storescu -> success, spool, audit log, queue."""
    port, log = served
    result = storescu(port, cr_chest)
    assert result.returncode == 0, result.stderr
    uid = str(dcmread(cr_chest, stop_before_pixels=True).SOPInstanceUID)
    assert (tmp_path / "home" / "spool" / "instances" / f"{uid}.dcm").is_file()
    tail = subprocess.run([*CLI, "audit", "tail", "-n", "50"], env=env, capture_output=True, text=True)
    assert tail.returncode == 0, tail.stderr
    assert re.search(rf"instance\.received\s+success ae=STORESCU .*sop={re.escape(uid)}", tail.stdout)
    assert re.search(rf"job\.queued\s+success .*sop={re.escape(uid)}", tail.stdout)
    queue = list((tmp_path / "home" / "broker" / "queue").glob("*.models.msg"))
    assert len(queue) == 1 and uid.encode() in __import__("base64").b64decode(
        __import__("json").loads(queue[0].read_bytes())["body"]
    )
    # No patient data in the node's log, only UIDs.
    text = log.read_text()
    assert "CompressedSamples" not in text and "19400305" not in text


def test_send_command(served, env, cr_chest: Path) -> None:
    port, _ = served
    done = subprocess.run(
        [*CLI, "send", str(cr_chest), "--to", f"CXRNODE@127.0.0.1:{port}", "--aet", "MODALITY"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("0x0000")


def test_send_reports_bad_files_and_bad_destinations(served, env, tmp_path: Path) -> None:
    port, _ = served
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"this is not DICOM")
    done = subprocess.run(
        [*CLI, "send", str(junk), "--to", f"CXRNODE@127.0.0.1:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "not a readable DICOM file" in done.stderr
    bad = subprocess.run(
        [*CLI, "send", str(junk), "--to", "nonsense"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "AET@host:port" in bad.stderr
    assert "Traceback" not in done.stderr + bad.stderr


def test_send_names_a_refused_presentation_context(served, env, cr_chest: Path, tmp_path: Path) -> None:
    """A data set the peer has no context for is reported as refused, with its SOP class and
    transfer syntax in words, not as "no response"; the others on the association still go."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import CTImageStorage, JPEGLossless

    port, _ = served
    ct = dcmread(cr_chest)
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ct.file_meta.TransferSyntaxUID = JPEGLossless  # never decoded: the context is refused first
    ct.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ct_path = tmp_path / "ct.dcm"
    ct.save_as(ct_path, enforce_file_format=True)
    done = subprocess.run(
        [*CLI, "send", str(ct_path), str(cr_chest), "--to", f"CXRNODE@127.0.0.1:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert lines[str(ct_path)].endswith(
        "refused: no accepted presentation context for CT Image Storage "
        "in JPEG Lossless, Non-Hierarchical (Process 14)"
    ), done.stdout
    assert lines[str(cr_chest)].endswith("0x0000")
    assert "no response" not in done.stdout


def test_audit_tail_follow(served, env) -> None:
    port, _ = served
    follower = subprocess.Popen(
        [*CLI, "audit", "tail", "-f", "-n", "1", "--interval", "0.1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # The first line is the newest existing event: from then on it follows.
        assert "spool.swept" in follower.stdout.readline()  # type: ignore[union-attr]
        assert run([dcmtk("echoscu"), "-aec", "CXRNODE", "127.0.0.1", str(port)]).returncode == 0
        line = follower.stdout.readline()  # type: ignore[union-attr]
        assert "association.accepted" in line or "echo" in line
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_db_upgrade_and_clear_errors(env, tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "db", "upgrade"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "home" / "audit.sqlite").is_file()
    fresh = {**env, "CXR_NODE_HOME": str(tmp_path / "other")}
    tail = subprocess.run([*CLI, "audit", "tail"], env=fresh, capture_output=True, text=True)
    assert tail.returncode == 1 and "db upgrade" in tail.stderr and "Traceback" not in tail.stderr


def test_production_refuses_an_empty_allow_list(env) -> None:
    prod = {**env, "CXR_NODE_ENVIRONMENT": "production"}
    done = subprocess.run([*CLI, "serve"], env=prod, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "ALLOWED_CALLING_AETS" in done.stderr and "Traceback" not in done.stderr
