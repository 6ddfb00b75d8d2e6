"""The analysis the node runs on one image: lungs, class, severity, heatmap.

``get_analyzer()`` returns one cached :class:`Analyzer` per process; models load
lazily on first use, on GPU when ``torch.cuda.is_available()``.
"""

from __future__ import annotations

import functools
import logging
import time
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
        (``result.quality``); the class is read off the opacity inside those lungs
        (:class:`models.evidence.OpacityClassifier`), and the heatmap explains that evidence,
        inside the lungs (:func:`models.explain.explain_lungs`).
        """
        return self.analyze_batch([loaded], heatmap=heatmap)[0]

    def analyze_batch(self, images: list[LoadedImage], heatmap: str = "gradcam") -> list[AnalysisResult]:
        """:meth:`analyze` for several images, each network run once over the whole batch.

        On a GPU one forward of N images costs little more than one of a single
        image. The models are in eval mode (batch norm uses its running
        statistics), so each image's result does not depend on the others;
        Grad-CAM runs per image. ``timings_s`` holds each image's share.
        """

        from models.evidence import opacity_features, resolution_chain
        from models.explain import METHODS, explain_lungs, to_unit
        from models.networks import OPACITY, V7_LEFT, V7_RIGHT
        from models.quality import CONFIDENT, check, lung_confidence, refine_lungs
        from models.segmentation import lungnet_outputs
        from models.severity import severity_matrix

        if heatmap not in METHODS:
            raise ValueError(f"unknown heatmap method {heatmap!r}; choose one of {METHODS}")
        if not images:
            return []
        n = len(images)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        # Normalised once per image: the model square and the display image both start from it.
        norms = [normalize(loaded.pixels) for loaded in images]
        prepared = [
            model_square(loaded.pixels, SEG_SIZE, normalized=norm)
            for loaded, norm in zip(images, norms, strict=True)
        ]
        geoms = [geom for _, geom in prepared]
        boxes = [
            (g.offset[0], g.offset[0] + g.resized[0], g.offset[1], g.offset[1] + g.resized[1]) for g in geoms
        ]
        # As the training cache, then the one resolution chain every training image went through.
        img8 = np.stack([resolution_chain(sq) for sq, _ in prepared])
        x256 = network_input(img8).to(self.device)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        seg = self.model("segmentation")
        net_out = lungnet_outputs(seg, x256)
        lungs = np.stack([refine_lungs(img8[i], net_out["lungs"][i], boxes[i]) for i in range(n)])
        net_out["lungs"] = lungs
        confidence = [lung_confidence(net_out["maps"][i][[V7_RIGHT, V7_LEFT]]) for i in range(n)]
        turned: list[float | None] = [None] * n
        for i in [int(j) for j in np.nonzero(np.array(confidence) < CONFIDENT)[0]]:  # unsure: turn it
            both = np.stack([np.rot90(img8[i], k).copy() for k in (1, 3)])
            maps = lungnet_outputs(seg, network_input(both).to(self.device))
            turned[i] = max(lung_confidence(m[[V7_RIGHT, V7_LEFT]]) for m in maps["maps"])
        checks = [check(img8[i], lungs[i], boxes[i], confidence[i], turned[i]) for i in range(n)]
        timings["segmentation"] = time.perf_counter() - t  # and the quality check

        t = time.perf_counter()
        opac = net_out["maps"][:, OPACITY]
        feats = np.stack([opacity_features(opac[i], lungs[i]) for i in range(n)])
        probs = self.model("classification").predict_proba(feats)
        timings["classification"] = time.perf_counter() - t

        t = time.perf_counter()
        per_lung = severity_matrix(img8, net_out)
        pred = self.model("severity").predict(per_lung)
        severities = [
            Severity(
                float(pred["geographic_extent"]["total"][i]),
                float(pred["opacity"]["total"][i]),
                LungSeverity(
                    float(pred["geographic_extent"]["right"][i]), float(pred["opacity"]["right"][i])
                ),
                LungSeverity(float(pred["geographic_extent"]["left"][i]), float(pred["opacity"]["left"][i])),
            )
            for i in range(n)
        ]
        embeddings = self.model("retrieval").transform(net_out["pooled"])
        timings["severity"] = time.perf_counter() - t  # and the retrieval embedding

        t = time.perf_counter()
        targets = [int(np.argmax(p)) for p in probs]
        heats = [
            to_unit(geoms[i].to_input(explain_lungs(seg, x256[i : i + 1], lungs[i], heatmap)))
            for i in range(n)
        ]
        timings["heatmap"] = time.perf_counter() - t  # renormalised: padding is cut away

        cls_entry = self.registry["models"]["classification"]
        thr = float(cls_entry.get("thresholds", {}).get("covid19", 0.5))
        share = {k: round(v / n, 4) for k, v in timings.items()}
        results = []
        for i, loaded in enumerate(images):
            right = geoms[i].to_input(lungs[i][0].astype(np.float32)) > 0.5
            left = geoms[i].to_input(lungs[i][1].astype(np.float32)) > 0.5
            p_covid = float(probs[i][CLASSES.index("covid19")])
            qc = checks[i]
            results.append(
                AnalysisResult(
                    classification={c: float(p) for c, p in zip(CLASSES, probs[i], strict=True)},
                    severity=severities[i],
                    right_lung=right,
                    left_lung=left,
                    heatmap=heats[i],
                    image=display_uint8(loaded.pixels, normalized=norms[i]),
                    models=self.model_ids(),
                    pixel_spacing_mm=loaded.pixel_spacing_mm,
                    heatmap_method=heatmap,
                    embedding=embeddings[i],
                    quality=Quality(qc.assessable, qc.lungs_found, qc.reasons, qc.text()),
                    extra={
                        "covid19_threshold": thr,
                        "covid19_positive": qc.lungs_found and p_covid >= thr,
                        "heatmap_class": CLASSES[targets[i]],
                        "opacity_fraction": float(feats[i][0]),
                        "quality_measures": {k: round(v, 4) for k, v in qc.measures.items()},
                        "timings_s": dict(share),
                        "batch_size": n,
                    },
                )
            )
        return results


@functools.lru_cache(maxsize=1)
def get_analyzer() -> Analyzer:
    """The process-wide :class:`Analyzer` (models load lazily on first analysis)."""
    return Analyzer()
