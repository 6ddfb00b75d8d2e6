"""Model registry: ``registry.json`` lists each shipped model with its weights file,
SHA-256, version, input size, labels, thresholds, training command, data and metrics.

Weights are loaded lazily with ``torch.load(weights_only=True)`` after the
SHA-256 check; only state_dicts (and JSON for the ridge) are shipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from models.exceptions import RegistryError, WeightsChecksumError, WeightsMissingError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
REGISTRY_PATH = PACKAGE_DIR / "registry.json"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
ROLES = ("encoder", "segmentation", "classification", "severity", "retrieval", "orientation")
# Roles the node runs on every image (the encoder is shipped for provenance and fine-tuning).
INFERENCE_ROLES = ("segmentation", "classification", "severity", "retrieval", "orientation")


def load_registry(path: Path | None = None) -> dict[str, Any]:
    """The parsed registry (``{"models": {role: entry}}``)."""
    path = Path(path or REGISTRY_PATH)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RegistryError(f"model registry not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise RegistryError(f"model registry {path} is not valid JSON: {exc}") from exc


def update_registry(entries: dict[str, dict[str, Any]], path: Path | None = None) -> dict[str, Any]:
    """The one writer of the registry: replace the given roles' entries, keep every other role.

    Read-modify-write, written to a temporary file and renamed over the old one, so a
    reader never sees half a file. A missing registry starts empty.
    """
    path = Path(path or REGISTRY_PATH)
    reg = load_registry(path) if path.is_file() else {"models": {}}
    unknown = sorted(set(entries) - set(ROLES))
    if unknown:
        raise RegistryError(f"unknown roles {unknown}; known: {list(ROLES)}")
    reg.setdefault("models", {}).update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(reg, indent=1) + "\n")
    os.replace(tmp, path)
    logger.info("registry %s: wrote %s", path, ", ".join(sorted(entries)))
    return reg


def entry(role: str, registry: dict[str, Any] | None = None) -> dict[str, Any]:
    """The registry entry of ``role`` (one of :data:`ROLES`)."""
    reg = registry if registry is not None else load_registry()
    try:
        return reg["models"][role]
    except KeyError as exc:
        raise RegistryError(f"no model registered for role {role!r} in {REGISTRY_PATH}") from exc


def model_id(role: str, registry: dict[str, Any] | None = None) -> str:
    e = entry(role, registry)
    return f"{e['name']}@{e['version']}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_path(role: str, weights_dir: Path | None = None, registry: dict[str, Any] | None = None) -> Path:
    """Path of ``role``'s weights file after checking it exists and matches its SHA-256."""
    e = entry(role, registry)
    path = Path(weights_dir or WEIGHTS_DIR) / e["file"]
    if not path.is_file():
        raise WeightsMissingError(path, f"{e['name']}@{e['version']}")
    actual = sha256_file(path)
    if actual != e["sha256"]:
        raise WeightsChecksumError(path, e["sha256"], actual)
    return path


def build_model(
    role: str, device: str = "cpu", weights_dir: Path | None = None, registry: dict[str, Any] | None = None
) -> Any:
    """Instantiate ``role``'s network from its registry ``arch`` and load verified weights."""
    import torch

    from models.networks import Encoder, LungNet

    e = entry(role, registry)
    path = verified_path(role, weights_dir, registry)
    arch = dict(e["arch"])
    cls = arch.pop("class")
    if cls == "OpacityLogistic":  # coefficients as JSON, no network
        return load_opacity_classifier(path)
    if cls == "OrientationLogistic":
        return load_orientation(path)
    widths = tuple(arch.get("widths", (32, 64, 128, 256)))
    model: torch.nn.Module
    if cls == "LungNet":
        model = LungNet(widths)
    elif cls == "Encoder":
        model = Encoder(widths)
    else:
        raise RegistryError(f"role {role!r}: unknown architecture {cls!r}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # a file with the right hash but wrong content is a registry error
        raise RegistryError(f"cannot load weights {path} for {role!r}: {exc}") from exc
    logger.info("loaded %s@%s on %s", e["name"], e["version"], device)
    return model.to(device).eval()


def load_opacity_classifier(path: Path) -> Any:
    """The round-3 classifier (:class:`models.evidence.OpacityClassifier`) from its verified JSON."""
    from models.evidence import OpacityClassifier

    try:
        return OpacityClassifier.from_json(json.loads(Path(path).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"cannot load classifier coefficients {path}: {exc}") from exc


def load_orientation(path: Path) -> Any:
    """The film-orientation model (:class:`models.orientation.OrientationModel`) from its verified JSON."""
    from models.orientation import OrientationModel

    try:
        return OrientationModel.from_json(json.loads(Path(path).read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"cannot load orientation coefficients {path}: {exc}") from exc


def load_ridge(weights_dir: Path | None = None, registry: dict[str, Any] | None = None) -> Any:
    """The severity ridge (JSON coefficients) after its SHA-256 check."""
    from models.severity import LungRidge

    path = verified_path("severity", weights_dir, registry)
    return LungRidge.from_json(json.loads(path.read_text()))


def load_projection(weights_dir: Path | None = None, registry: dict[str, Any] | None = None) -> Any:
    """The retrieval embedding's projection (an ``.npz`` of arrays, no pickles) after its SHA-256 check."""
    from models.retrieval import Projection

    return Projection.load(verified_path("retrieval", weights_dir, registry))
