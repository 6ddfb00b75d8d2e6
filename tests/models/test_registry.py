"""Shipped weights: present, within budget, matching their SHA-256; corruption fails cleanly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.exceptions import WeightsChecksumError, WeightsMissingError
from models.registry import ROLES, WEIGHTS_DIR, build_model, entry, load_registry, sha256_file, verified_path


def test_every_role_registered_with_metadata() -> None:
    reg = load_registry()
    for role in ROLES:
        e = entry(role, reg)
        for key in ("name", "version", "file", "sha256", "labels", "training", "metrics"):
            assert key in e, (role, key)
        # Reproducible: each names the command that made it (models.training.fit or .retrieval).
        assert e["training"]["command"].startswith("python -m models.training.")


def test_shipped_weights_match_sha256_and_budget() -> None:
    total = 0
    for role in ROLES:
        path = verified_path(role)
        assert sha256_file(path) == entry(role)["sha256"]
        total += path.stat().st_size
        assert path.stat().st_size < 16 * 2**20
    assert total <= 60 * 2**20


@pytest.mark.parametrize("role", ["encoder", "segmentation", "classification"])
def test_weights_load_with_weights_only(role: str) -> None:
    model = build_model(role, "cpu")
    assert not model.training


def test_corrupted_weights_fail_with_checksum_error(tmp_path: Path) -> None:
    e = entry("classification")
    for f in WEIGHTS_DIR.iterdir():
        if f.is_file():  # not cxr-node train's work folders (fit/, round3/)
            shutil.copy(f, tmp_path / f.name)
    target = tmp_path / e["file"]
    data = bytearray(target.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError) as info:
        build_model("classification", "cpu", weights_dir=tmp_path)
    msg = str(info.value)
    assert str(target) in msg and e["sha256"] in msg and sha256_file(target) in msg


def test_missing_weights_fail_with_missing_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="lung-net"):
        build_model("segmentation", "cpu", weights_dir=tmp_path)


def test_analyzer_reports_corruption(tmp_path: Path, jpeg_path: Path) -> None:
    from models.inference import Analyzer
    from models.preprocessing import load_image

    for f in WEIGHTS_DIR.iterdir():
        if f.is_file():  # not cxr-node train's work folders (fit/, round3/)
            shutil.copy(f, tmp_path / f.name)
    target = tmp_path / entry("segmentation")["file"]
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(WeightsChecksumError):
        Analyzer(device="cpu", weights_dir=tmp_path).analyze(load_image(jpeg_path))
