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

from models.preprocessing import LoadedImage, display_uint8, normalize, preprocess
from models.result import CLASSES, AnalysisResult, LungSeverity, Severity

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

        Masks and heatmap are returned at the input image's resolution.
        """
        return self.analyze_batch([loaded], heatmap=heatmap)[0]

    def analyze_batch(self, images: list[LoadedImage], heatmap: str = "gradcam") -> list[AnalysisResult]:
        """:meth:`analyze` for several images, each network run once over the whole batch.

        On a GPU one forward of N images costs little more than one of a single
        image. The models are in eval mode (batch norm uses its running
        statistics), so each image's result does not depend on the others;
        Grad-CAM runs per image. ``timings_s`` holds each image's share.
        """
        import torch

        from models.explain import METHODS, explain, to_unit
        from models.networks import OPACITY, lung_crop, uncrop
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
            preprocess(loaded.pixels, SEG_SIZE, normalized=norm)
            for loaded, norm in zip(images, norms, strict=True)
        ]
        geoms = [geom for _, geom in prepared]
        img8 = np.stack([np.round((sq / 1024.0 + 1.0) * 127.5).astype(np.uint8) for sq, _ in prepared])
        x256 = torch.from_numpy(img8.astype(np.float32) / 127.5 * 1024.0 - 1024.0)[:, None].to(self.device)
        timings["preprocess"] = time.perf_counter() - t  # as the training cache

        t = time.perf_counter()
        net_out = lungnet_outputs(self.model("segmentation"), x256)
        lungs = net_out["lungs"]
        timings["segmentation"] = time.perf_counter() - t

        t = time.perf_counter()
        crops = [lung_crop(img8[i], lungs[i]) for i in range(n)]
        xc = torch.from_numpy(np.stack([c for c, _ in crops])[:, None]).to(self.device)
        clf = self.model("classification")
        temperature = float(self.registry["models"]["classification"].get("temperature", 1.0))
        with torch.no_grad():
            probs = torch.softmax(clf(xc) / temperature, 1).cpu().numpy()
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
        opac = net_out["maps"][:, OPACITY]
        embeddings = self.model("retrieval").transform(net_out["pooled"])
        timings["severity"] = time.perf_counter() - t  # and the retrieval embedding

        t = time.perf_counter()
        targets = [int(np.argmax(p)) for p in probs]
        heats = [
            to_unit(geoms[i].to_input(uncrop(explain(clf, xc[i : i + 1], targets[i], heatmap), crops[i][1])))
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
                    extra={
                        "covid19_threshold": thr,
                        "covid19_positive": p_covid >= thr,
                        "heatmap_class": CLASSES[targets[i]],
                        "opacity_fraction": float(opac[i][lungs[i].any(0)].mean()) if lungs[i].any() else 0.0,
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
