"""/metrics, /health and `cxr-node status` against a running node and a real database."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import MetricsServer
from node.service import Node
from node.settings import Settings, configure
from tests.helpers import CLI, c_store, free_port, make_dx


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_health_and_status(node_config: Settings, cr_chest: Path) -> None:
    settings = configure(metrics_port=free_port())
    node = Node(settings)
    _, port = node.start()
    try:
        base = f"http://127.0.0.1:{settings.metrics_port}"
        assert c_store(port, make_dx(cr_chest)) == 0x0000
        bad = make_dx(cr_chest)
        bad.BitsStored, bad.HighBit = 40, 39
        assert c_store(port, bad) == 0xC210
        status, body = _get(f"{base}/metrics")
        assert status == 200
        samples = _samples(body.decode())
        for name, value in [
            ("cxr_node_instances_received_total", 1),
            ("cxr_node_instances_rejected_total", 1),
            ("cxr_node_jobs_queued_total", 1),
            ("cxr_node_instances_analysed_total", 0),
            ("cxr_node_exports_dead_total", 0),
            ("cxr_node_queue_depth", 1),
            ("cxr_node_database_up", 1),
        ]:
            assert samples[(name, ())] == value, name
        assert samples[("cxr_node_stage_duration_seconds_count", (("stage", "ingest"),))] == 1
        assert samples[("cxr_node_stage_duration_seconds_bucket", (("le", "+Inf"), ("stage", "ingest")))] == 1
        assert any(
            name == "cxr_node_model_info" and ("role", "classification") in labels for name, labels in samples
        )
        status, body = _get(f"{base}/health")
        assert status == 200
        assert json.loads(body) == {
            "status": "ok",
            "database": "ok",
            "ae_title": "CXRNODE",
            "queue_depth": 1,
            "ready": True,
        }
        assert _get(f"{base}/nothing")[0] == 404
        env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_NODE_")}
        env.update(CXR_NODE_HOME=str(settings.home), COLUMNS="200")
        done = subprocess.run([*CLI, "status"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "queue depth 1" in done.stdout
        assert [line for line in done.stdout.splitlines() if "instances_rejected" in line][0].split()[
            -2
        ] == "1"
    finally:
        node.stop()


def test_health_is_503_without_a_database(node_config: Settings) -> None:
    settings = configure(
        metrics_port=free_port(), database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    )
    server = MetricsServer(settings)
    server.start()
    try:
        status, body = _get(f"http://127.0.0.1:{settings.metrics_port}/health")
        assert status == 503
        assert json.loads(body)["status"] == "unavailable"
        status, body = _get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        assert status == 200 and _samples(body.decode())[("cxr_node_database_up", ())] == 0
    finally:
        server.stop()
