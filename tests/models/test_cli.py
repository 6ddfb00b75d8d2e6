"""``train_app`` / ``eval_app``: cheap import, one JSON object per eval."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner


def test_cli_import_does_not_import_torch() -> None:
    code = "import sys, models.cli; assert 'torch' not in sys.modules, 'torch imported'"
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
    from models.cli import eval_app

    result = CliRunner().invoke(eval_app, [task, "--json"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert obj["task"] == task and keys <= set(obj)


def test_train_help_lists_commands() -> None:
    from models.cli import train_app

    out = CliRunner().invoke(train_app, ["--help"]).output
    for cmd in ("segmentation", "classification", "severity"):
        assert cmd in out


def test_classification_recompute_matches_stored() -> None:
    """Every stored out-of-source number is recomputed from the shipped predictions."""
    from models.cli import eval_app

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


def test_train_classification_quick_runs_end_to_end(shared_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``cxr-node train classification --quick``: LungNet cache, leave-one-source-out, probe, triage (CPU)."""
    from models.cli import train_app

    result = CliRunner().invoke(
        train_app, ["classification", "--quick", "--data", str(shared_data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    obj = json.loads([ln for ln in result.output.splitlines() if ln.startswith("{")][-1])
    assert set(obj["leave_one_source_out"]) == {
        "cxr",
        "covid-radiography",
        "hannover",
        "covid-cxnet",
        "nih",
        "montgomery",
        "shenzhen",
    }
    assert (tmp_path / "opacity-classifier.json").is_file() and (tmp_path / "report.json").is_file()
