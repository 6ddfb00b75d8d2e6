"""A real Orthanc (Debian package) as the test PACS: own config, loopback ports, tmp storage."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port


class Orthanc:
    """One Orthanc process. ``stop()``/``start()`` keep its storage (a PACS going down)."""

    ae_title = "ORTHANC"

    def __init__(
        self,
        root: Path,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        binary = shutil.which("Orthanc")
        if binary is None:
            pytest.fail("Orthanc is not installed: apt-get install orthanc")
        self.binary = binary
        self.root = root
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = modalities or {}
        self.extra_config = extra_config or {}  # e.g. plugins (tests/viewer loads DICOMweb)
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = root / "orthanc.json"
        self.log = root / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "cxr-node-test-pacs",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": True,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "Plugins": [],
            "StableAge": 1,
            "OverwriteInstances": True,
            "HttpTimeout": 30,
        }
        config.update(self.extra_config)
        self.config.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 30.0) -> Orthanc:
        self.write_config()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"Orthanc exited: {self.log.read_text()[-2000:]}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        pytest.fail("Orthanc did not start in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # REST ---------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes | dict | str) -> Any:
        payload = (
            data
            if isinstance(data, bytes)
            else (data.encode() if isinstance(data, str) else json.dumps(data).encode())
        )
        request = urllib.request.Request(self.url + path, data=payload, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def study_instances(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Each instance of a study: its Orthanc id, SOP Instance UID, modality, series UID."""
        found = self.post("/tools/lookup", study_instance_uid)
        studies = [f["ID"] for f in found if f["Type"] == "Study"]
        if not studies:
            return []
        out = []
        for instance in self.get(f"/studies/{studies[0]}/instances"):
            tags = instance["MainDicomTags"]
            series = self.get(f"/instances/{instance['ID']}/series")
            out.append(
                {
                    "id": instance["ID"],
                    "sop_instance_uid": tags.get("SOPInstanceUID"),
                    "modality": series["MainDicomTags"].get("Modality"),
                    "series_instance_uid": series["MainDicomTags"].get("SeriesInstanceUID"),
                }
            )
        return out

    def file(self, orthanc_id: str) -> bytes:
        data = self.get(f"/instances/{orthanc_id}/file")
        assert isinstance(data, bytes)
        return data
