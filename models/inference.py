"""The analysis the node runs on one image: lungs, class, severity, heatmap.

``get_analyzer()`` returns one cached :class:`Analyzer` per process; models load
lazily on first use, on GPU when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.preprocessing import LoadedImage, display_uint8, model_square, network_input, normalize
from models.result import CLASSES, AnalysisResult, LungSeverity, Quality, Severity

logger = logging.getLogger(__name__)

SEG_SIZE = 256


class Analyzer:
    """Runs every registered model on a :class:`LoadedImage`.

    Parameters
    ----------
    device
        ``"cuda"`` or ``"cpu"``; default: cuda when available.
    weights_dir, registry_path
        Overrides for tests; default: the shipped ``models/weights`` and ``models/registry.json``.
    """

    def __init__(
        self, device: str | None = None, weights_dir: Path | None = None, registry_path: Path | None = None
    ) -> None:
        self._device = device
        self.weights_dir = weights_dir
        self.registry_path = registry_path
        self._registry: dict[str, Any] | None = None
        self._models: dict[str, Any] = {}

    @property
    def device(self) -> str:
        if self._device is None:
            import torch

            self._device = "cuda" if torch.cuda.is_available() else "cpu"
        return self._device

    @property
    def registry(self) -> dict[str, Any]:
        if self._registry is None:
            from models.registry import load_registry

            self._registry = load_registry(self.registry_path)
        return self._registry

    def model(self, role: str) -> Any:
        """The loaded model of ``role`` (verified SHA-256), loaded on first call."""
        if role not in self._models:
            from models.registry import build_model, load_projection, load_ridge

            if role == "severity":
                self._models[role] = load_ridge(self.weights_dir, self.registry)
            elif role == "retrieval":
                self._models[role] = load_projection(self.weights_dir, self.registry)
            else:
                self._models[role] = build_model(role, self.device, self.weights_dir, self.registry)
        return self._models[role]

    def load_all(self) -> None:
        """Load (and verify) every model now instead of on first use."""
        from models.registry import INFERENCE_ROLES

        for role in INFERENCE_ROLES:
            self.model(role)

    @property
    def loaded_roles(self) -> tuple[str, ...]:
        """The roles whose model is in memory."""
        return tuple(self._models)

    def model_ids(self) -> dict[str, str]:
        from models.registry import INFERENCE_ROLES, model_id

        return {r: model_id(r, self.registry) for r in INFERENCE_ROLES}

    def analyze(self, loaded: LoadedImage, heatmap: str = "gradcam") -> AnalysisResult:
        """Segment, classify, score severity and explain one image.

        Masks and heatmap are returned at the input image's resolution. The 256-px square goes
        through :func:`models.evidence.resolution_chain` (as every training image did); the lung
        outline is LungNet's, refined (:func:`models.quality.refine_lungs`) and checked
        (``result.quality``); the class is read off the opacity inside those lungs and the
        severity totals (:class:`models.evidence.OpacityClassifier`), and the heatmap explains that evidence,
        inside the lungs (:func:`models.explain.explain_lungs`).
        """
        return self.analyze_batch([loaded], heatmap=heatmap)[0]

    def analyze_batch(self, images: list[LoadedImage], heatmap: str = "gradcam") -> list[AnalysisResult]:
        """:meth:`analyze` for several images, each network run once over the whole batch.

        On a GPU one forward of N images costs little more than one of a single
        image. The models are in eval mode (batch norm uses its running
        statistics), so each image's result does not depend on the others;
        Grad-CAM runs per image. ``timings_s`` holds each image's share.
        Stages: prepare -> segment (and the quality check) -> severity (and the retrieval
        embedding) -> classify -> heatmaps -> results.
        """
        from models.explain import METHODS

        if heatmap not in METHODS:
            raise ValueError(f"unknown heatmap method {heatmap!r}; choose one of {METHODS}")
        if not images:
            return []
        timings: dict[str, float] = {}
        with _stage(timings, "preprocess"):
            batch = self._prepare(images)
        with _stage(timings, "segmentation"):  # and the quality check
            self._segment(batch)
        with _stage(timings, "severity"):  # and the retrieval embedding
            self._severity(batch)
        with _stage(timings, "classification"):  # reads the severity totals too
            self._classify(batch)
        with _stage(timings, "heatmap"):
            self._heatmaps(batch, heatmap)
        return self._results(batch, heatmap, timings)

    def _prepare(self, images: list[LoadedImage]) -> _Batch:
        """The model squares: as the training cache, then the one resolution chain every
        training image went through; normalised once per image (model square and display)."""
        from models.evidence import resolution_chain

        norms = [normalize(loaded.pixels) for loaded in images]
        prepared = [  # each film the usual way round (LoadedImage.flips); maps flipped back in _results
            model_square(loaded.upright(loaded.pixels), SEG_SIZE, normalized=loaded.upright(norm))
            for loaded, norm in zip(images, norms, strict=True)
        ]
        geoms = [geom for _, geom in prepared]
        img8 = np.stack([resolution_chain(sq) for sq, _ in prepared])
        return _Batch(images, norms, geoms, img8, network_input(img8).to(self.device))

    def _segment(self, b: _Batch) -> None:
        """LungNet, the refined lungs, the orientation model and the quality check."""
        from models.quality import check, refine_lungs
        from models.segmentation import lungnet_outputs

        seg = self.model("segmentation")
        b.net_out = lungnet_outputs(seg, b.x)
        boxes = [g.content_box for g in b.geoms]
        lungs = np.stack([refine_lungs(b.img8[i], b.net_out["lungs"][i], boxes[i]) for i in range(b.n)])
        b.net_out["lungs"] = b.lungs = lungs
        orientation = self.model("orientation")
        b.checks = [
            check(b.img8[i], lungs[i], boxes[i], *orientation.read(b.img8[i], boxes[i])) for i in range(b.n)
        ]

    def _classify(self, b: _Batch) -> None:
        """Class probabilities from the opacity measured inside the lungs and the severity totals."""
        from models.evidence import classifier_inputs, opacity_features
        from models.networks import OPACITY

        opac = b.net_out["maps"][:, OPACITY]
        b.features = classifier_inputs(
            np.stack([opacity_features(opac[i], b.lungs[i]) for i in range(b.n)]),
            b.evidence_totals["geographic_extent"],
            b.evidence_totals["opacity"],
        )
        # A film whose outline failed the check has its totals withheld: its class is read without them.
        withheld = np.array([not c.assessable for c in b.checks])
        b.probs = self.model("classification").predict_proba(b.features, withheld=withheld)

    def _severity(self, b: _Batch) -> None:
        """Cohen's scores per lung and in total, and the retrieval embedding."""
        from models.severity import clear_together, severity_matrix

        fitted = self.model("severity").predict(severity_matrix(b.img8, b.net_out))
        b.evidence_totals = {k: v["total"] for k, v in fitted.items()}
        pred = clear_together(fitted)
        ext, opa = pred["geographic_extent"], pred["opacity"]
        b.severities = [
            Severity(
                float(ext["total"][i]),
                float(opa["total"][i]),
                LungSeverity(float(ext["right"][i]), float(opa["right"][i])),
                LungSeverity(float(ext["left"][i]), float(opa["left"][i])),
            )
            for i in range(b.n)
        ]
        b.embeddings = self.model("retrieval").transform(b.net_out["pooled"])

    def _heatmaps(self, b: _Batch, heatmap: str) -> None:
        """LungNet's opacity explained inside the lungs, back on each image (padding cut away)."""
        from models.explain import explain_lungs, to_unit

        seg = self.model("segmentation")
        b.heats = [
            to_unit(b.geoms[i].to_input(explain_lungs(seg, b.x[i : i + 1], b.lungs[i], heatmap)))
            for i in range(b.n)
        ]

    def _results(self, b: _Batch, heatmap: str, timings: dict[str, float]) -> list[AnalysisResult]:
        cls_entry = self.registry["models"]["classification"]
        thr = float(cls_entry.get("thresholds", {}).get("covid19", 0.5))
        share = {k: round(v / b.n, 4) for k, v in timings.items()}
        results = []
        for i, loaded in enumerate(b.images):
            p_covid = float(b.probs[i][CLASSES.index("covid19")])
            qc = b.checks[i]
            results.append(
                AnalysisResult(
                    classification={c: float(p) for c, p in zip(CLASSES, b.probs[i], strict=True)},
                    severity=b.severities[i],
                    right_lung=loaded.upright(b.geoms[i].to_input(b.lungs[i][0].astype(np.float32))) > 0.5,
                    left_lung=loaded.upright(b.geoms[i].to_input(b.lungs[i][1].astype(np.float32))) > 0.5,
                    heatmap=np.ascontiguousarray(loaded.upright(b.heats[i])),
                    image=display_uint8(loaded.pixels, normalized=b.norms[i]),
                    models=self.model_ids(),
                    pixel_spacing_mm=loaded.pixel_spacing_mm,
                    heatmap_method=heatmap,
                    embedding=b.embeddings[i],
                    quality=Quality(qc.assessable, qc.lungs_found, qc.reasons, qc.text()),
                    extra={
                        "covid19_threshold": thr,
                        "covid19_positive": qc.lungs_found and p_covid >= thr,
                        "heatmap_class": CLASSES[int(np.argmax(b.probs[i]))],
                        "opacity_fraction": float(b.features[i][0]),
                        "quality_measures": {k: round(v, 4) for k, v in qc.measures.items()},
                        "timings_s": dict(share),
                        "batch_size": b.n,
                    },
                )
            )
        return results


@dataclass
class _Batch:
    """What the stages of :meth:`Analyzer.analyze_batch` hand on to each other."""

    images: list[LoadedImage]
    norms: list[np.ndarray]
    geoms: list[Any]
    img8: np.ndarray  # (N, 256, 256) uint8 model squares, after the resolution chain
    x: Any  # the network input tensor on the analyzer's device
    net_out: dict[str, np.ndarray] = field(default_factory=dict)
    lungs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    checks: list[Any] = field(default_factory=list)
    features: np.ndarray = field(default_factory=lambda: np.zeros(0))
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    severities: list[Severity] = field(default_factory=list)
    # The ridge's totals as fitted (LungRidge.predict), which the classifier reads; the
    # severities are as reported (LungRidge.report: a lung clear by either score is clear by both).
    evidence_totals: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros(0))
    heats: list[np.ndarray] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.images)


@contextlib.contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t


@functools.lru_cache(maxsize=1)
def get_analyzer() -> Analyzer:
    """The process-wide :class:`Analyzer` (models load lazily on first analysis)."""
    return Analyzer()
