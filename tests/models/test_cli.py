"""``train_app`` / ``eval_app``: cheap import, one JSON object per eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner


def test_cli_import_does_not_import_torch() -> None:
    code = "import sys, models.training.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("task", "keys"),
    [
        ("segmentation", {"task", "dice", "hausdorff_px", "per_source"}),
        (
            "classification",
            {
                "task",
                "protocol",
                "leave_one_source_out",
                "source_probe",
                "triage",
                "quality",
                "accuracy_out_of_source",
                "confusion_out_of_source",
                "ece_out_of_source",
                "auto_threshold",
                "hannover_icu",
                "heat",
            },
        ),
        ("severity", {"task", "protocol", "geographic_extent", "opacity", "baseline", "cv234"}),
    ],
)
def test_eval_json(task: str, keys: set[str]) -> None:
    from models.training.cli import eval_app

    result = CliRunner().invoke(eval_app, [task, "--json"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["task"] == task and keys <= set(obj)


def test_train_is_one_command() -> None:
    from models.training.cli import train_app

    out = CliRunner().invoke(train_app, ["--help"]).output
    for option in ("--quick", "--out", "--registry", "--limit"):
        assert option in out
    assert "Commands" not in out  # no per-model sub-commands: one run trains every model


@pytest.mark.slow
@pytest.mark.timeout(1200)  # about 3 minutes on an idle 2-core machine
def test_quick_train_into_a_temporary_registry_then_analyse(tmp_path, shared_data, cr_chest) -> None:  # type: ignore[no-untyped-def]
    """`cxr-node train --quick` reproduces every role the node runs (retrieval included) into a
    registry of its own, and the node analyses an image with exactly those weights."""
    from models.inference import Analyzer
    from models.preprocessing import load_image
    from models.registry import INFERENCE_ROLES, ROLES, load_registry, sha256_file
    from models.training.cli import train_app
    from models.training.sources import SOURCES

    shipped = load_registry()
    out = tmp_path / "trained"
    result = CliRunner().invoke(
        train_app, ["--quick", "--limit", "120", "--data", str(shared_data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    registry = load_registry(out / "registry.json")
    assert set(registry["models"]) == set(ROLES)
    for role, e in registry["models"].items():
        assert sha256_file(out / e["file"]) == e["sha256"], role
        assert e["sha256"] != shipped["models"][role]["sha256"], f"{role}: the shipped file, not a new one"
    assert registry["models"]["classification"]["name"] == "opacity-classifier"
    severity = registry["models"]["severity"]
    assert severity["version"] == shipped["models"]["severity"]["version"]  # reported as the node reports
    assert set(severity["metrics"]["clear_lungs"]["by_source"]) == set(SOURCES)
    report = json.loads((out / "fit" / "train.json").read_text())
    assert set(report["classification"]["leave_one_source_out"]) == {
        "cxr",
        "covid-radiography",
        "hannover",
        "covid-cxnet",
        "nih",
        "montgomery",
        "shenzhen",
    }
    analyzer = Analyzer(device="cpu", weights_dir=out, registry_path=out / "registry.json")
    res = analyzer.analyze(load_image(cr_chest))
    assert set(res.models) >= set(INFERENCE_ROLES)
    assert load_registry() == shipped  # the shipped registry is untouched


def test_classification_recompute_matches_stored() -> None:
    """Every stored out-of-source number is recomputed from the shipped predictions."""
    from models.training.cli import eval_app

    stored = json.loads(CliRunner().invoke(eval_app, ["classification", "--json"]).output)
    fresh = json.loads(CliRunner().invoke(eval_app, ["classification", "--json", "--recompute"]).output)
    assert fresh["recomputed"] is True
    for key in (
        "leave_one_source_out",
        "accuracy_out_of_source",
        "confusion_out_of_source",
        "ece_out_of_source",
    ):
        assert fresh[key] == stored[key], key
