"""deploy/monitoring: the alert rules pass promtool and fire when they should; every metric
the rules and the Grafana dashboard name is on a running node's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from node.db import audit
from node.db.audit import EventKind, Outcome
from node.service import Node
from node.settings import Settings, configure
from tests.helpers import c_store, free_port, make_dx

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "cxr-node.json"
# Made by Prometheus itself (the scrape), not by the node.
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: apt-get install prometheus")
    return path


def test_rules_pass_promtool_check() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


N1 = {"instance": "n1", "job": "cxr-node"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    label_text = ", ".join(f'{k}="{v}"' for k, v in {**N1, **labels}.items())
    return {"series": f"{name}{{{label_text}}}", "values": values}


# (alert, input series, eval time, the alert's value where it fires or None where it must not).
# promtool's clock starts at 1970-01-01 00:00 UTC, a Thursday.
CASES = [
    ("CxrNodeDown", [series("up", "1 1 0x10")], "5m", 0),
    ("CxrNodeDown", [series("up", "1x10")], "5m", None),
    ("CxrNodeDatabaseDown", [series("cxr_node_database_up", "1 1 0x10")], "5m", 0),
    ("CxrNodeDatabaseDown", [series("cxr_node_database_up", "1x10")], "5m", None),
    ("CxrNodeWorkerDown", [series("cxr_node_embedded_worker_up", "0x10")], "5m", 0),
    ("CxrNodeWorkerDown", [series("cxr_node_embedded_worker_up", "1x10")], "5m", None),
    (
        "CxrNodeWorkersStalled",
        [
            series("cxr_node_queue_depth", "5x30"),
            series("cxr_node_last_job_finished_timestamp_seconds", "0x30"),
        ],
        "25m",
        5,
    ),
    (
        "CxrNodeWorkersStalled",
        [
            series("cxr_node_queue_depth", "5x30"),
            series("cxr_node_last_job_finished_timestamp_seconds", "0+60x30"),
        ],
        "25m",
        None,
    ),
    ("CxrNodeQueueGrowing", [series("cxr_node_queue_depth", "0+5x40")], "30m", 150),
    ("CxrNodeQueueGrowing", [series("cxr_node_queue_depth", "30x40")], "30m", None),
    ("CxrNodeExportsDead", [series("cxr_node_outbox", "0 0 2x10", state="dead")], "10m", 2),
    ("CxrNodeExportsDead", [series("cxr_node_outbox", "2x10", state="sent")], "10m", None),
    # Last study at midnight: at 09:00 on a Thursday that is working hours; at 03:00 it is not.
    ("CxrNodeNoStudyReceived", [series("cxr_node_last_received_timestamp_seconds", "0x600")], "9h", 32400),
    ("CxrNodeNoStudyReceived", [series("cxr_node_last_received_timestamp_seconds", "0x600")], "3h", None),
    ("CxrNodeNoStudyReceived", [series("cxr_node_last_received_timestamp_seconds", "0+60x600")], "9h", None),
    (
        "CxrNodeDiskBelowFloor",
        [series("cxr_node_spool_free_bytes", "100x10"), series("cxr_node_spool_min_free_bytes", "1000x10")],
        "5m",
        100,
    ),
    (
        "CxrNodeDiskLow",
        [series("cxr_node_spool_free_bytes", "1500x20"), series("cxr_node_spool_min_free_bytes", "1000x20")],
        "15m",
        1500,
    ),
    (
        "CxrNodeDiskLow",
        [series("cxr_node_spool_free_bytes", "1500x20"), series("cxr_node_spool_min_free_bytes", "0x20")],
        "15m",
        None,
    ),
]


def expected_alert(rule: dict, labels: dict[str, str], value: float) -> dict:
    """The alert as promtool reports it: the rule's labels and its annotations rendered."""

    def render(text: str) -> str:
        text = text.replace("{{ $labels.instance }}", labels["instance"])
        return text.replace("{{ $value }}", f"{value:g}")

    return {
        "exp_labels": {**labels, **rule.get("labels", {})},
        "exp_annotations": {k: render(v) for k, v in rule.get("annotations", {}).items()},
    }


def test_rules_fire_when_they_should(tmp_path: Path) -> None:
    """promtool's unit tests (``promtool test rules``), one per case above."""
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert {case[0] for case in CASES} == set(rules)  # every rule has a case
    tests = []
    for alert, inputs, eval_time, value in CASES:
        labels = dict(N1)
        if alert == "CxrNodeExportsDead":
            labels["state"] = "dead"
        exp = [] if value is None else [expected_alert(rules[alert], labels, value)]
        tests.append(
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [{"eval_time": eval_time, "alertname": alert, "exp_alerts": exp}],
            }
        )
    spec = tmp_path / "alerts.test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run(
        [promtool(), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def named_metrics() -> dict[str, set[str]]:
    """Metric names in every rule and dashboard expression, by where they are named."""
    exprs = {"rules": [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs["dashboard"] = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    functions = {
        "time",
        "rate",
        "deriv",
        "hour",
        "day_of_week",
        "sum",
        "by",
        "and",
        "on",
        "histogram_quantile",
        "le",
    }
    names: dict[str, set[str]] = {}
    for where, texts in exprs.items():
        for text in texts:
            bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", text)  # labels, ranges, strings
            for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
                if name not in functions and not name.startswith(("state", "stage", "instance")):
                    names.setdefault(name, set()).add(where)
    return names


def scrape(settings: Settings) -> dict[str, float | None]:
    """Metric name -> value of its unlabelled sample (None: a family with labels or no samples)."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as reply:
        text = reply.read().decode()
    families = list(text_string_to_metric_families(text))
    # A family with no samples yet (no outbox rows) is still declared by its HELP/TYPE lines.
    found: dict[str, float | None] = {f.name: None for f in families}
    for family in families:
        for sample in family.samples:
            found[sample.name] = sample.value if not sample.labels else None
    return found


@pytest.mark.timeout(300)
def test_every_named_metric_is_on_the_running_node(node_config: Settings, cr_chest: Path) -> None:
    settings = configure(metrics_port=free_port(), embedded_worker=True, worker_concurrency=1)
    node = Node(settings)
    _, port = node.start()
    try:
        assert c_store(port, make_dx(cr_chest)) == 0x0000  # a study received
        # What a worker writes when it finishes a job (the analysis itself is tested elsewhere).
        audit.record(EventKind.JOB_FAILED, Outcome.FAILURE, "monitoring test", sop_instance_uid="1.2.3")
        names = named_metrics()
        assert {"cxr_node_database_up", "cxr_node_queue_depth", "process_resident_memory_bytes"} <= set(names)
        on_node = scrape(settings)
        missing = {n: sorted(w) for n, w in names.items() if n not in on_node and n not in PROMETHEUS_OWN}
        assert not missing, f"named but not on /metrics: {missing}"
        # The values the new rules read are the node's, not placeholders.
        assert abs(time.time() - on_node["cxr_node_last_received_timestamp_seconds"]) < 120  # type: ignore[operator]
        assert (
            on_node["cxr_node_last_job_finished_timestamp_seconds"]
            >= on_node[  # type: ignore[operator]
                "cxr_node_last_received_timestamp_seconds"
            ]
        )
        assert on_node["cxr_node_spool_free_bytes"] == pytest.approx(
            shutil.disk_usage(settings.spool_path).free, rel=0.05
        )
        assert on_node["cxr_node_spool_min_free_bytes"] == settings.min_free_bytes
        assert on_node["cxr_node_embedded_worker_up"] == 1
        assert on_node["cxr_node_database_up"] == 1
    finally:
        node.stop()
