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
                "auc",
                "accuracy",
                "covid19_at_98_sensitivity",
                "within_collection_covid19_vs_pneumonia_auc",
                "confusion",
                "per_source",
                "leave_one_source_out",
                "source_probe",
                "calibration",
                "gradcam",
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


def test_train_help_lists_commands() -> None:
    from models.training.cli import train_app

    out = CliRunner().invoke(train_app, ["--help"]).output
    for cmd in ("segmentation", "classification", "severity"):
        assert cmd in out


def test_classification_recompute_matches_stored() -> None:
    """Every stored classification number is recomputed from the shipped out-of-fold predictions."""
    from models.training.cli import eval_app

    stored = json.loads(CliRunner().invoke(eval_app, ["classification", "--json"]).output)
    fresh = json.loads(CliRunner().invoke(eval_app, ["classification", "--json", "--recompute"]).output)
    assert fresh["recomputed"] is True
    for key in ("auc", "accuracy", "covid19_at_98_sensitivity", "per_source", "calibration", "confusion"):
        assert fresh[key] == stored[key], key
