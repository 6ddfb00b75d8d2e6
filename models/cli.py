"""Command line for training and evaluation (mounted as ``cxr-node train|eval``).

Torch is imported inside the commands only, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_DIR.parent / "shared" / "data"
DEFAULT_OUT = Path(__file__).resolve().parent / "weights"

train_app = typer.Typer(help="Train the models (CPU is fine; seeds fixed, patient-grouped splits).")
eval_app = typer.Typer(help="Print held-out, patient-grouped evaluation metrics.")

DataOpt = typer.Option(DEFAULT_DATA, "--data", help="development data directory (cxr-collection, nih-sample)")
OutOpt = typer.Option(DEFAULT_OUT, "--out", help="where weights and task JSON go")
SeedOpt = typer.Option(0, "--seed")
JsonOpt = typer.Option(False, "--json", help="print one JSON object")
RecomputeOpt = typer.Option(
    False, "--recompute", help="recompute instead of printing the metrics stored at training"
)


def _setup(verbose: bool = True) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register(out: Path) -> None:
    from models.registry import REGISTRY_PATH, write_registry

    target = REGISTRY_PATH if out.resolve() == DEFAULT_OUT.resolve() else out / "registry.json"
    write_registry(out, target)
    typer.echo(f"registry written: {target}")


@train_app.command("segmentation")
def train_segmentation(
    data: Path = DataOpt, out: Path = OutOpt, epochs: int = typer.Option(18, "--epochs"), seed: int = SeedOpt
) -> None:
    """Train the lung U-Net and evaluate it on held-out patients."""
    _setup()
    from models.tasks.segmentation import train

    out.mkdir(parents=True, exist_ok=True)
    info = train(data, out, epochs=epochs, seed=seed)
    _register(out)
    typer.echo(json.dumps({"dice": info["metrics"]["dice"], "hausdorff_px": info["metrics"]["hausdorff_px"]}))


@train_app.command("classification")
def train_classification(
    data: Path = DataOpt,
    out: Path = OutOpt,
    epochs: int = typer.Option(20, "--epochs"),
    seed: int = SeedOpt,
    folds: int = typer.Option(5, "--folds"),
    part: str = typer.Option("all", "--part", help="all | final | cv | assemble (metrics from saved folds)"),
    fold: list[int] = typer.Option(  # noqa: B008
        None, "--fold", help="run only these CV folds (0-based; repeatable)"
    ),
) -> None:
    """Train the final classifier and run patient-grouped k-fold CV for its metrics.

    Needs the lung segmenter's weights in ``--out`` (the mask channel).
    """
    _setup()
    from models.tasks.classification import train

    out.mkdir(parents=True, exist_ok=True)
    info = train(data, out, epochs=epochs, seed=seed, folds=folds, part=part, fold_ids=fold or None)
    _register(out)
    typer.echo(json.dumps({k: info.get("metrics", {}).get(k) for k in ("auc", "accuracy")}))


@train_app.command("severity")
def train_severity(
    data: Path = DataOpt,
    out: Path = OutOpt,
    epochs: int = typer.Option(40, "--epochs"),
    seed: int = SeedOpt,
    reuse_opacity: bool = typer.Option(
        False, "--reuse-opacity", help="keep the opacity U-Net already in --out"
    ),
) -> None:
    """Train the opacity U-Net, run the 50-split protocol and fit the severity ridge.

    Needs the lung segmenter's weights in ``--out``.
    """
    _setup()
    from models.tasks.severity import train

    out.mkdir(parents=True, exist_ok=True)
    info = train(data, out, epochs=epochs, seed=seed, reuse_opacity=reuse_opacity)
    _register(out)
    m = info["severity"]["metrics"]
    typer.echo(json.dumps({k: m[k] for k in ("geographic_extent", "opacity", "baseline")}))


def _stored(role: str) -> dict[str, Any]:
    from models.registry import entry

    return entry(role)


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj))
    else:
        typer.echo(json.dumps(obj, indent=2))


def segmentation_summary(metrics: dict[str, Any], model: str) -> dict[str, Any]:
    return {
        "task": "segmentation",
        "model": model,
        "protocol": "held-out patients (severity-scored patients + 10% of the rest), never trained on",
        "dice": metrics["dice"],
        "dice_right": metrics["dice_right"],
        "dice_left": metrics["dice_left"],
        "hausdorff_mm": None,
        "hausdorff_px": metrics["hausdorff_px"],
        "n_images": metrics["n_images"],
        "n_patients": metrics["n_patients"],
        "note": metrics["note"],
    }


@eval_app.command("segmentation")
def eval_segmentation(data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt) -> None:
    """Lung Dice and Hausdorff distance on held-out patients."""
    _setup(verbose=not as_json)
    e = _stored("segmentation")
    metrics = e["metrics"]
    if recompute:
        from models.datasets import CACHE_SIZE, build_cache
        from models.registry import build_model
        from models.tasks.segmentation import evaluate_model, heldout_mask

        arrays = build_cache(data, Path("/tmp/cxr-models") / f"cache{CACHE_SIZE}.npz")
        metrics = evaluate_model(
            build_model("segmentation"), data, arrays, heldout_mask(arrays, e["training"]["seed"])
        )
    _emit(segmentation_summary(metrics, f"{e['name']}@{e['version']}"), as_json)


@eval_app.command("classification")
def eval_classification(
    data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt
) -> None:
    """Per-class AUC (bootstrap CI), accuracy, confusion, COVID-19 sens/spec at 98% sensitivity."""
    _setup(verbose=not as_json)
    e = _stored("classification")
    metrics = dict(e.get("metrics", {}))
    if recompute:
        import tempfile

        from models.tasks.classification import train

        with tempfile.TemporaryDirectory() as tmp:
            for f in ("lung-unet.pt",):
                (Path(tmp) / f).write_bytes((DEFAULT_OUT / f).read_bytes())
            metrics = train(data, Path(tmp), epochs=e["training"]["epochs"], seed=e["training"]["seed"])[
                "metrics"
            ]
    metrics["model"] = f"{e['name']}@{e['version']}"
    _emit(metrics, as_json)


@eval_app.command("severity")
def eval_severity(data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt) -> None:
    """Cohen et al.'s 50 random 50/50 patient-grouped splits, beside the training-mean baseline."""
    _setup(verbose=not as_json)
    e = _stored("severity")
    metrics = dict(e["metrics"])
    if recompute:
        from models.tasks.severity import evaluate_shipped

        metrics = evaluate_shipped(data, seed=e["training"]["seed"])
    metrics["model"] = f"{e['name']}@{e['version']}"
    _emit(metrics, as_json)
