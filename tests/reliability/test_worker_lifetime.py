"""The embedded worker dies with its node, and a restarted node shares its queue with no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from node.service import Node
from tests.helpers import CLI, free_port, wait_until


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_worker_dies_when_node_is_killed(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
    env.update(CXR_NODE_HOME=str(tmp_path / "home"), CXR_NODE_PORT=str(port), CXR_NODE_MIN_FREE_BYTES="0")
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen([*CLI, "serve"], env=env, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_until(lambda: "ready." in log.read_text(), timeout=120, what="embedded worker ready")
        worker = psutil.Process(node.pid).children()[0]
        family = [worker, *worker.children(recursive=True)]  # the worker and its prefork pool
        node.send_signal(signal.SIGKILL)  # the node alone, not its process group
        node.wait()
        wait_until(lambda: all(_gone(p) for p in family), timeout=60, what="worker gone with its node")
    finally:
        os.killpg(node.pid, signal.SIGKILL)  # whatever is left, so that a failure leaks nothing


def test_restarted_node_stops_an_orphan_worker(node_config) -> None:  # type: ignore[no-untyped-def]
    dead = subprocess.Popen(["true"])
    dead.wait()
    # What an orphan embedded worker looks like in /proc: its parent node is gone.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "worker", "--parent-pid", str(dead.pid)]
    )
    try:
        node = Node(node_config)
        node.worker_pid_file.parent.mkdir(parents=True, exist_ok=True)
        node.worker_pid_file.write_text(f"{orphan.pid}\n")
        node.start()
        try:
            assert orphan.poll() is not None or _gone(psutil.Process(orphan.pid))
            assert orphan.wait(timeout=5) == -signal.SIGTERM
        finally:
            node.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
