"""Helpers for end-to-end tests: a `cxr-node` process, results read back from Orthanc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from tests.helpers import CLI, free_port, wait_until
from tests.orthanc import Orthanc

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def sop_classes(orthanc: Orthanc, study_instance_uid: str) -> dict[str, list[dict]]:
    """Instances of a study in Orthanc, grouped by SOP Class UID."""
    grouped: dict[str, list[dict]] = {}
    for item in orthanc.study_instances(study_instance_uid):
        tags = orthanc.get(f"/instances/{item['id']}/simplified-tags")
        grouped.setdefault(tags["SOPClassUID"], []).append({**item, "tags": tags})
    return grouped


def has_results(orthanc: Orthanc, study_instance_uid: str) -> dict[str, list[dict]] | None:
    grouped = sop_classes(orthanc, study_instance_uid)
    sr = [c for c in grouped if c.startswith("1.2.840.10008.5.1.4.1.1.88.")]
    if sr and SecondaryCaptureImageStorage in grouped:
        return grouped
    return None


def numeric_values(ds: Dataset) -> list[float]:
    """Every NUM value in an SR content tree."""
    values: list[float] = []
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "NUM" and "MeasuredValueSequence" in item:
            values.extend(float(m.NumericValue) for m in item.MeasuredValueSequence)
        values.extend(numeric_values(item))
    return values


def coded_values(ds: Dataset) -> list[str]:
    codes: list[str] = []
    for item in ds.get("ContentSequence", []):
        for code in item.get("ConceptCodeSequence", []):
            codes.append(str(code.CodeMeaning))
        codes.extend(coded_values(item))
    return codes


class NodeProcess:
    def __init__(self, tmp_path: Path, orthanc: Orthanc, **env: str) -> None:
        self.port = free_port()
        self.home = tmp_path / "node"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
        self.env = {
            **clean,
            "CXR_NODE_HOME": str(self.home),
            "CXR_NODE_PORT": str(self.port),
            "CXR_NODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
            "CXR_NODE_EXPORT_BACKOFF_SECONDS": "0.5",
            "CXR_NODE_MIN_FREE_BYTES": "0",
            **env,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = tmp_path / "node.log"

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        # A session of its own: kill_hard() takes the process and its children at once.
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [*CLI, *args], env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        self.procs.append(proc)
        return proc

    def start(self, *args: str) -> NodeProcess:
        # Only what this start writes counts (a restart appends to the same log).
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.spawn("serve", *args)
        wait_until(
            lambda: f"listening on 127.0.0.1:{self.port}" in self.log.read_text()[offset:],
            timeout=60,
            what="node listening",
        )
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def kill_hard(self) -> None:
        """SIGKILL every process of the node (a power cut, as far as the node can tell)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def audit(self) -> str:
        done = subprocess.run(
            [*CLI, "audit", "tail", "-n", "500"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.stdout


def analyze_json(path: Path, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [*CLI, "analyze", "--json", str(path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def result_counts(orthanc: Orthanc, study_instance_uid: str) -> tuple[int, int]:
    """How many SR and SC instances the study holds in Orthanc."""
    grouped = sop_classes(orthanc, study_instance_uid)
    sr = sum(len(v) for k, v in grouped.items() if k.startswith(SR_PREFIX))
    return sr, len(grouped.get(SecondaryCaptureImageStorage, []))
