"""deploy/compose.yaml and deploy/k8s/*.yaml, checked without a container runtime.

No Docker or Kubernetes runs here or in CI: these tests parse the YAML and
check what can drift from the code: every CXR_NODE_* variable is a setting
of node/settings.py and the values validate, every command is a real
`cxr-node` command with real options, and the pieces refer to each other.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from node.cli import app
from node.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
SETTING_NAMES = {f"CXR_NODE_{name.upper()}" for name in Settings.model_fields} | {"CXR_NODE_CONFIG"}


def check_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every CXR_NODE_* name is a setting and the values make valid Settings."""
    unknown = sorted(k for k in env if k.startswith("CXR_NODE_") and k not in SETTING_NAMES)
    assert not unknown, f"not settings of node/settings.py: {unknown}"
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


def check_command(command: list[str]) -> None:
    assert command[0] == "cxr-node", command
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, f"{command}: {result.output}"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_node_services(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    assert {"orthanc", "redis", "postgres", "node", "worker", "worker-gpu"} <= set(services)
    for name in ("node", "worker", "worker-gpu"):
        service = services[name]
        check_command(service["command"])
        settings = check_settings(service["environment"], monkeypatch)
        assert settings.broker.startswith("redis://redis:"), name
        assert settings.db_url.startswith("postgresql+psycopg://") and "@postgres:" in settings.db_url
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert any(v.endswith(":/data") for v in service["volumes"]) and settings.home == Path("/data")
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    [device] = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert "gpu" in device["capabilities"]
    assert "gpu" not in services["worker"].get("profiles", [])


def test_compose_node_and_orthanc_agree(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    node = check_settings(services["node"]["environment"], monkeypatch)
    orthanc = services["orthanc"]["environment"]
    [destination] = node.destinations
    assert (destination.ae_title, destination.host) == (orthanc["ORTHANC__DICOM_AET"], "orthanc")
    assert f"{destination.port}:{destination.port}" in services["orthanc"]["ports"][0]
    modality = json.loads(orthanc["ORTHANC__DICOM_MODALITIES"])["cxrnode"]
    assert modality == [node.ae_title, "node", node.port]
    assert orthanc["ORTHANC__DICOM_AET"] in node.allowed_calling_aets
    assert orthanc["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    [lua] = json.loads(orthanc["ORTHANC__LUA_SCRIPTS"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["orthanc"]["volumes"]}
    assert (DEPLOY / mounts[lua]).is_file()
    assert node.metrics_port and node.metrics_host == "0.0.0.0"


def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources and all((DEPLOY.parent / s).exists() for s in sources), sources


def _k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_k8s_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = _k8s_objects()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"], obj
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    deployments = by_kind["Deployment"]
    assert {"cxr-node", "cxr-node-worker", "cxr-node-worker-gpu"} <= set(deployments)
    secrets = {
        (name, key): value for name, s in by_kind["Secret"].items() for key, value in s["stringData"].items()
    }
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert spec["enableServiceLinks"] is False, name  # no CXR_NODE_PORT=tcp://... injected
        for volume in spec["volumes"]:
            assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
        [container] = spec["containers"]
        check_command(container["command"])
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(by_kind["ConfigMap"][source["configMapRef"]["name"]]["data"])
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            env[item["name"]] = secrets[(ref["name"], ref["key"])] if ref else item["value"]
        check_settings(env, monkeypatch)
    gpu = deployments["cxr-node-worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    pod_labels = [d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values()]
    for service in by_kind["Service"].values():
        assert any(service["spec"]["selector"].items() <= labels for labels in pod_labels)
