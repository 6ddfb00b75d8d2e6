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

from models.preprocessing import LoadedImage, display_uint8, preprocess
from models.result import CLASSES, AnalysisResult

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
            from models.registry import build_model, load_ridge

            if role == "severity":
                self._models[role] = load_ridge(self.weights_dir, self.registry)
            else:
                self._models[role] = build_model(role, self.device, self.weights_dir, self.registry)
        return self._models[role]

    def load_all(self) -> None:
        """Load (and verify) every model now instead of on first use."""
        from models.registry import ROLES

        for role in ROLES:
            self.model(role)

    def model_ids(self) -> dict[str, str]:
        from models.registry import model_id

        roles = ("segmentation", "classification", "severity", "opacity", "severity_backbone")
        return {r: model_id(r, self.registry) for r in roles}

    def analyze(self, loaded: LoadedImage, heatmap: str = "gradcam") -> AnalysisResult:
        """Segment, classify, score severity and explain one image.

        Masks and heatmap are returned at the input image's resolution.
        """
        import torch

        from models.classification import classifier_input
        from models.explain import METHODS, explain, to_unit
        from models.segmentation import clean_lung_masks
        from models.severity import severity_features, to_severity

        if heatmap not in METHODS:
            raise ValueError(f"unknown heatmap method {heatmap!r}; choose one of {METHODS}")
        timings: dict[str, float] = {}
        t = time.perf_counter()
        square, geom = preprocess(loaded.pixels, SEG_SIZE)
        img8 = np.round((square / 1024.0 + 1.0) * 127.5).astype(np.uint8)  # as the training cache
        x256 = torch.from_numpy(img8.astype(np.float32) / 127.5 * 1024.0 - 1024.0)[None, None].to(self.device)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            lung_prob = torch.sigmoid(self.model("segmentation")(x256))[0].cpu().numpy()
        lungs = clean_lung_masks(lung_prob)
        timings["segmentation"] = time.perf_counter() - t

        t = time.perf_counter()
        xc = torch.from_numpy(classifier_input(img8[None], lungs[None])).to(self.device)
        clf = self.model("classification")
        with torch.no_grad():
            probs = torch.softmax(clf(xc), 1)[0].cpu().numpy()
        timings["classification"] = time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            opac = torch.sigmoid(self.model("opacity")(x256))[0, 0].cpu().numpy()
        with torch.no_grad():
            logits = self.model("severity_backbone")(xc)[0].cpu().numpy()
        ridge = self.model("severity")
        severity = to_severity(ridge.predict(severity_features(img8, lungs, opac, logits)), lungs, opac)
        timings["severity"] = time.perf_counter() - t

        t = time.perf_counter()
        target = int(np.argmax(probs))
        heat_sq = explain(clf, xc, target, heatmap)
        heat = to_unit(geom.to_input(heat_sq))  # renormalised: padding is cut away
        timings["heatmap"] = time.perf_counter() - t

        right = geom.to_input(lungs[0].astype(np.float32)) > 0.5
        left = geom.to_input(lungs[1].astype(np.float32)) > 0.5
        cls_entry = self.registry["models"]["classification"]
        thr = float(cls_entry.get("thresholds", {}).get("covid19", 0.5))
        p_covid = float(probs[CLASSES.index("covid19")])
        return AnalysisResult(
            classification={c: float(p) for c, p in zip(CLASSES, probs, strict=True)},
            severity=severity,
            right_lung=right,
            left_lung=left,
            heatmap=heat,
            image=display_uint8(loaded.pixels),
            models=self.model_ids(),
            pixel_spacing_mm=loaded.pixel_spacing_mm,
            heatmap_method=heatmap,
            extra={
                "covid19_threshold": thr,
                "covid19_positive": p_covid >= thr,
                "heatmap_class": CLASSES[target],
                "opacity_fraction": float(opac[lungs.any(0)].mean()) if lungs.any() else 0.0,
                "timings_s": {k: round(v, 4) for k, v in timings.items()},
            },
        )


@functools.lru_cache(maxsize=1)
def get_analyzer() -> Analyzer:
    """The process-wide :class:`Analyzer` (models load lazily on first analysis)."""
    return Analyzer()
