"""Command line for training and evaluation (mounted as ``cxr-node train|eval``).

Torch is imported inside the commands only, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import typer

from models.training.sources import DEFAULT_DATA

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights"

train_app = typer.Typer(
    help="Train every shipped model in one run (about 7 min on a GPU, hours on a CPU; fixed seeds, "
    "patient-grouped splits)."
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


def train(
    data: Path,
    out: Path,
    registry: Path,
    quick: bool = False,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Reproduce every shipped model, each stage on the models the stages before it released:

    1. corpus cache and the joint fit (encoder, LungNet, severity: they share the encoder),
       released into ``out`` + ``registry``;
    2. the retrieval projection on the released LungNet;
    3. the lung-opacity classifier: the released LungNet run once over every source
       (:mod:`models.training.extract`), then chosen and measured by leave-one-source-out
       (:mod:`models.training.round3`);
    4. the film-orientation model on the same cache (:mod:`models.training.orientation`);
    5. how often the severity's clear-lung rule changes a lung there
       (:mod:`models.training.clear_lungs`, into the severity entry).

    ``registry`` is updated role by role (:func:`models.registry.update_registry`); work files
    go to ``out/fit``, ``out/round3`` and ``out/orientation``."""
    from models.training import clear_lungs, extract, fit, orientation, release, retrieval, round3
    from models.training.corpus import build_cache

    work = out / "fit"
    cache = work / "corpus256.npz"
    if not cache.is_file():
        build_cache(data, cache, limit=limit)
    report = fit.main(cache, work, quick=quick, seed=seed)
    release.main(work, weights=out, registry=registry)
    report["retrieval"] = retrieval.release(cache, out, registry)
    lungnet_cache = out / "round3" / "lungnet-cache"
    if quick:  # a few images per source: numbers mean nothing
        extract.extract(data, lungnet_cache, limit=12, weights_dir=out, registry=registry)
    else:  # CPU budget: every 4th covid-radiography and every 3rd NIH image
        subsample = {"covid-radiography": 4, "nih": 3}
        extract.extract(data, lungnet_cache, subsample=subsample, weights_dir=out, registry=registry)
    report["classification"] = round3.main(
        lungnet_cache,
        out / "round3",
        data,
        ship=True,
        seed=seed,
        heat_n=3 if quick else 40,
        weights_dir=out,
        registry=registry,
    )
    report["orientation"] = orientation.main(
        lungnet_cache,
        out / "orientation",
        ship=True,
        weights_dir=out,
        registry=registry,
        per_family=(12, 4) if quick else (orientation.OTHER_PER_FAMILY, orientation.OTHER_TEST_PER_FAMILY),
    )
    report["clear_lungs"] = clear_lungs.disagreements(lungnet_cache, weights_dir=out, registry=registry)
    clear_lungs.ship(report["clear_lungs"], registry)
    return report


QuickOpt = typer.Option(False, "--quick", help="tiny smoke run (minutes on a CPU); numbers mean nothing")
LimitOpt = typer.Option(None, "--limit", help="an evenly spread subset of N images (smoke runs)")
RegistryOpt = typer.Option(
    None, "--registry", help="registry to update (default: models/registry.json, or OUT/registry.json)"
)


@train_app.callback(invoke_without_command=True)
def train_all(
    data: Path = DataOpt,
    out: Path = OutOpt,
    registry: Path | None = RegistryOpt,
    seed: int = SeedOpt,
    quick: bool = QuickOpt,
    limit: int | None = LimitOpt,
) -> None:
    """Train and register every model the node runs: encoder, LungNet, classifier, severity, retrieval,
    film orientation."""
    from models.registry import REGISTRY_PATH

    _setup()
    ships = out.resolve() == DEFAULT_OUT.resolve()
    if quick and ships:  # a smoke run never replaces the shipped models
        out, ships = Path(tempfile.gettempdir()) / "cxr-node-train-quick", False
    registry = registry or (REGISTRY_PATH if ships else out / "registry.json")
    report = train(data, out, registry, quick=quick, seed=seed, limit=limit)
    (out / "fit" / "train.json").write_text(json.dumps(report, indent=1))
    from models.registry import load_registry

    for role, e in load_registry(registry)["models"].items():
        typer.echo(f"{role:15} {e['name']}@{e['version']}  {e['file']}  sha256 {e['sha256'][:16]}")
    typer.echo(f"weights in {out}, registry {registry}, report {out / 'fit' / 'train.json'}")


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

        from models.registry import build_model
        from models.training.corpus import STYLE_NONE, cached
        from models.training.fit import (
            run_lungnet,
            segmentation_holdout,
            segmentation_metrics,
            served_squares,
        )

        arrays = cached(data)
        idx = np.nonzero(segmentation_holdout(arrays) & (arrays["style"] != STYLE_NONE))[0]
        images = torch.from_numpy(served_squares(arrays["image"]))  # as the node serves them
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
    (``models/weights/classification-loso.npz``); retraining is ``cxr-node train``."""
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

    e = entry("severity")
    protocols = e["metrics"][e["arch"]["features"]]  # the shipped ridge's feature set
    if recompute:
        import numpy as np
        import torch

        from models.registry import build_model
        from models.severity import severity_matrix
        from models.training.corpus import cached, scored, severity_targets
        from models.training.fit import run_lungnet, served_squares, severity_protocols

        arrays = cached(data)
        sev = np.nonzero(scored(arrays))[0]
        served = served_squares(arrays["image"][sev])  # as the node serves them
        pred = run_lungnet(build_model("segmentation"), torch.from_numpy(served), np.arange(len(sev)), "cpu")
        feats = severity_matrix(served, pred)
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


@eval_app.command("orientation")
def eval_orientation(as_json: bool = JsonOpt) -> None:
    """The film-orientation model's false alarms and catch per held-out source."""
    _setup(verbose=not as_json)
    from models.registry import entry, model_id

    _emit({"model": model_id("orientation"), **entry("orientation")["metrics"]}, as_json)


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
