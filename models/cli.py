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

train_app = typer.Typer(
    help="Train the models (about 7 min on a GPU, hours on a CPU; fixed seeds, patient-grouped splits)."
)
eval_app = typer.Typer(help="Print held-out, patient-grouped evaluation metrics.")

DataOpt = typer.Option(
    DEFAULT_DATA, "--data", help="development data directory (cxr-collection, nih-sample, nih-extra, nlm-tb)"
)
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


def _fit(data: Path, out: Path, quick: bool, seed: int) -> dict[str, Any]:
    """Build the corpus cache and run :mod:`models.fit` (all models share one encoder, so
    they are trained together), then ship the result when ``out`` is the package's weights."""
    from models import fit, release
    from models.corpus import build_cache

    ship = out.resolve() == DEFAULT_OUT.resolve()
    work = out / "fit" if ship else out
    cache = work / "corpus256.npz"
    if not cache.is_file():
        build_cache(data, cache)
    report = fit.main(cache, work, quick=quick, seed=seed)
    if ship:
        release.main(work)
        typer.echo("weights and registry written to models/")
    return report


QuickOpt = typer.Option(False, "--quick", help="tiny smoke run (minutes on a CPU); numbers mean nothing")


@train_app.command("segmentation")
def train_segmentation(
    data: Path = DataOpt, out: Path = OutOpt, seed: int = SeedOpt, quick: bool = QuickOpt
) -> None:
    """Pretrain the encoder and train every model (one run: they share the encoder); print LungNet's part."""
    _setup()
    report = _fit(data, out, quick, seed)
    typer.echo(json.dumps(report["segmentation"]))


@train_app.command("classification")
def train_classification(
    data: Path = DataOpt, out: Path = OutOpt, seed: int = SeedOpt, quick: bool = QuickOpt
) -> None:
    """The lung-opacity classifier (round 3, CPU): the shipped LungNet run once over every image
    (cached), then the classifier chosen and measured by leave-one-source-out; print the
    leave-one-source-out matrix, the source probe and triage per source. Ships into models/
    when --out is the package's weights (never with --quick)."""
    _setup()
    from models.training import extract, round3

    ship = out.resolve() == DEFAULT_OUT.resolve()
    work = out / "round3" if ship else out
    cache = work / "lungnet-cache"
    if quick:  # 12 images per source: minutes on a CPU, numbers mean nothing
        extract.extract(data, cache, limit=12)
    else:
        extract.extract(data, cache, subsample={"covid-radiography": 4, "nih": 3})
    report = round3.main(cache, work, data, ship=ship and not quick, seed=seed, heat_n=3 if quick else 40)
    typer.echo(json.dumps({k: report[k] for k in ("leave_one_source_out", "source_probe", "triage")}))


@train_app.command("severity")
def train_severity(
    data: Path = DataOpt, out: Path = OutOpt, seed: int = SeedOpt, quick: bool = QuickOpt
) -> None:
    """Pretrain the encoder and train every model (one run); print the severity protocols."""
    _setup()
    report = _fit(data, out, quick, seed)
    typer.echo(json.dumps(report["severity"]))


def _emit(obj: dict[str, Any], as_json: bool) -> None:
    typer.echo(json.dumps(obj) if as_json else json.dumps(obj, indent=2))


def _pooled(per_source: dict[str, Any], key: str) -> float:
    """Image-weighted mean over sources of a ``{"mean", "n"}`` metric."""
    items = [v[key] for k, v in per_source.items() if isinstance(v, dict) and key in v]
    n = sum(i["n"] for i in items)
    return round(sum(i["mean"] * i["n"] for i in items) / n, 4) if n else float("nan")


@eval_app.command("segmentation")
def eval_segmentation(data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt) -> None:
    """Lung Dice and Hausdorff distance per source on held-out patients."""
    _setup(verbose=not as_json)
    from models.registry import entry, model_id

    heldout = entry("segmentation")["metrics"]["heldout"]
    if recompute:
        import numpy as np
        import torch

        from models.corpus import STYLE_NONE, cached
        from models.fit import run_lungnet, segmentation_holdout, segmentation_metrics
        from models.registry import build_model

        arrays = cached(data)
        idx = np.nonzero(segmentation_holdout(arrays) & (arrays["style"] != STYLE_NONE))[0]
        images = torch.from_numpy(arrays["image"])
        heldout = segmentation_metrics(
            arrays, idx, run_lungnet(build_model("segmentation"), images, idx, "cpu")
        )
    per_source = {k: v for k, v in heldout.items() if k != "opacity_dice"}
    _emit(
        {
            "task": "segmentation",
            "model": model_id("segmentation"),
            "protocol": "held-out patients (every severity-scored patient + a hashed 15% of the others)",
            "dice": _pooled(per_source, "dice"),
            "hausdorff_mm": None,
            "hausdorff_px": _pooled(per_source, "hausdorff_px"),
            "per_source": per_source,
            "opacity_dice": heldout.get("opacity_dice"),
            "recomputed": recompute,
        },
        as_json,
    )


@eval_app.command("classification")
def eval_classification(
    data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt
) -> None:
    """Leave-one-source-out AUCs, source probe, triage per source, quality check, calibration.

    ``--recompute`` recomputes the out-of-source numbers from the shipped predictions
    (``models/weights/classification-loso.npz``); retraining is ``cxr-node train classification``."""
    _setup(verbose=not as_json)
    from models.registry import entry, model_id

    metrics = dict(entry("classification")["metrics"])
    if recompute:
        import numpy as np

        from models.training.round3 import recompute as fresh_metrics

        with np.load(DEFAULT_OUT / "classification-loso.npz", allow_pickle=False) as z:
            metrics.update(fresh_metrics({k: z[k] for k in z.files}))
    metrics["model"] = model_id("classification")
    metrics["recomputed"] = recompute
    _emit(metrics, as_json)


@eval_app.command("severity")
def eval_severity(data: Path = DataOpt, as_json: bool = JsonOpt, recompute: bool = RecomputeOpt) -> None:
    """Cohen et al.'s 50 random 50/50 splits on the 94 (the seed's table), and a patient-grouped
    5-fold CV on all 234, each beside the training-mean baseline."""
    _setup(verbose=not as_json)
    from models.registry import entry, model_id
    from models.release import SEVERITY_FEATURES

    e = entry("severity")
    protocols = e["metrics"][SEVERITY_FEATURES]
    if recompute:
        import numpy as np
        import torch

        from models.corpus import cached, scored, severity_targets
        from models.fit import run_lungnet, severity_protocols
        from models.registry import build_model
        from models.severity import severity_matrix

        arrays = cached(data)
        sev = np.nonzero(scored(arrays))[0]
        pred = run_lungnet(build_model("segmentation"), torch.from_numpy(arrays["image"]), sev, "cpu")
        feats = severity_matrix(arrays["image"][sev], pred)
        protocols = severity_protocols(
            feats,
            severity_targets(arrays, sev),
            arrays["patient"][sev],
            arrays["in_cohen_2020"][sev],
            50,
            e["training"]["seed"],
        )
    c94 = protocols["cohen94"]
    _emit(
        {
            "task": "severity",
            "model": model_id("severity"),
            "protocol": "50 random 50/50 patient-grouped splits of Cohen et al.'s 94 images; ridge refitted "
            "on each training half",
            "geographic_extent": c94["geographic_extent"],
            "opacity": c94["opacity"],
            "baseline": c94["baseline"],
            "cohen94_plus_extended": protocols["cohen94_plus_extended"],
            "cv234": protocols["cv234"],
            "n_images": e["metrics"]["n_images"],
            "recomputed": recompute,
        },
        as_json,
    )


@eval_app.command("triage")
def eval_triage(data: Path = DataOpt, as_json: bool = JsonOpt) -> None:
    """The default triage rule per held-out source (its ``auto`` threshold fitted without that source)."""
    _setup(verbose=not as_json)
    from models.registry import entry

    metrics = entry("classification")["metrics"]
    _emit(
        {
            "task": "triage",
            "rule": "covid19 >= auto or extent >= 4 (the default triage_rule)",
            "protocol": "nested leave-one-source-out: auto set at 97 % sensitivity on out-of-source "
            "predictions "
            "for the other sources, applied to the held-out source; no class when the quality check found "
            "nothing lung-like, no extent when the outline is not assessable",
            "shipped_auto_threshold": metrics["auto_threshold"],
            "per_source": metrics["triage"],
        },
        as_json,
    )
