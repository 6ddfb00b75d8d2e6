"""Dataset index (labels, patients, masks) and a preprocessed array cache.

Labels (Basu et al.'s four classes), decided here and documented in the cards:

- cxr-collection ``COVID-19`` and ``COVID-19, ARDS`` -> covid19;
- cxr-collection bacterial/viral/fungal non-COVID pneumonias (SARS, Pneumocystis,
  Streptococcus, Klebsiella, E.Coli, Legionella, Mycoplasma, Varicella,
  Influenza, Chlamydophila, Bacterial, Pneumonia) and Lipoid pneumonia -> pneumonia;
- cxr-collection ``ARDS`` without COVID-19 -> other_disease;
- ``No Finding`` (both sources) -> normal;
- nih-sample with ``Pneumonia`` among its labels -> pneumonia (a second source
  for the class, which weakens the source shortcut); other nih findings -> other_disease;
- ``todo`` and ``Unknown`` are excluded from classification (kept for lung masks).
"""

from __future__ import annotations

import csv
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from models.preprocessing import load_image, preprocess
from models.result import CLASSES

logger = logging.getLogger(__name__)

CACHE_SIZE = 256
OPACITY_CLASSES = ("ground-glass", "consolidation")
EXCLUDED_FINDINGS = {"todo", "unknown", ""}


@dataclass
class Record:
    """One image of the development data."""

    file: str  # path relative to the data directory
    source: str  # "cxr" or "nih"
    patient: str  # "cxr-<patientid>" or "nih-<Patient ID>"
    finding: str
    label: int  # index in CLASSES, -1 when excluded
    v7_mask: str | None = None
    right_mask: str | None = None
    left_mask: str | None = None
    opacity_masks: tuple[str, ...] | None = None  # None: not segmented by radiologists
    extent: float | None = None  # Cohen geographic_mean 0-8
    opacity: float | None = None  # Cohen opacity_mean 0-6


def cxr_label(finding: str) -> int:
    """Class index for a cxr-collection ``finding`` (-1 when excluded)."""
    f = finding.strip()
    if f.lower() in EXCLUDED_FINDINGS:
        return -1
    if f.startswith("COVID-19"):
        return CLASSES.index("covid19")
    if f == "No Finding":
        return CLASSES.index("normal")
    if f == "ARDS":
        return CLASSES.index("other_disease")
    return CLASSES.index("pneumonia")


def nih_label(labels: str) -> int:
    """Class index for an nih-sample ``Finding Labels`` string."""
    parts = set(labels.split("|"))
    if parts == {"No Finding"}:
        return CLASSES.index("normal")
    if "Pneumonia" in parts:
        return CLASSES.index("pneumonia")
    return CLASSES.index("other_disease")


def build_index(data: Path) -> list[Record]:
    """All images of ``data`` (cxr-collection + nih-sample) with labels and masks."""
    data = Path(data)
    cxr = data / "cxr-collection"
    records: dict[str, Record] = {}
    with (cxr / "metadata.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            rel = f"cxr-collection/images/{row['file']}"
            if not (data / rel).is_file():
                continue
            records[row["file"]] = Record(
                rel, "cxr", f"cxr-{row['patientid']}", row["finding"], cxr_label(row["finding"])
            )
    with (cxr / "lung-masks" / "index.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["file"] in records:
                records[row["file"]].v7_mask = f"cxr-collection/lung-masks/{row['mask']}"
    seg: dict[str, dict[str, str]] = {}
    with (cxr / "segmentations" / "index.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            seg.setdefault(row["file"], {})[row["class"]] = f"cxr-collection/segmentations/{row['mask']}"
    for file, masks in seg.items():
        if file not in records:
            continue
        rec = records[file]
        rec.right_mask = masks.get("right-lung")
        rec.left_mask = masks.get("left-lung")
        rec.opacity_masks = tuple(masks[c] for c in OPACITY_CLASSES if c in masks)
    with (cxr / "severity-scores.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["file"] in records:
                records[row["file"]].extent = float(row["geographic_mean"])
                records[row["file"]].opacity = float(row["opacity_mean"])
    out = sorted(records.values(), key=lambda r: r.file)
    nih = data / "nih-sample"
    with (nih / "labels.csv").open(newline="") as fh:
        for row in sorted(csv.DictReader(fh), key=lambda r: r["file"]):
            rel = f"nih-sample/images/{row['file']}"
            if (data / rel).is_file():
                out.append(
                    Record(
                        rel,
                        "nih",
                        f"nih-{row['Patient ID']}",
                        row["Finding Labels"],
                        nih_label(row["Finding Labels"]),
                    )
                )
    logger.info("indexed %d images", len(out))
    return out


def _read_mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) == 255


def split_lungs(both: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a two-lung mask into (patient right, patient left).

    The patient's right lung is on the image's left. Connected components are
    assigned by centroid relative to the mask's horizontal centre; a component
    spanning both sides (lungs touching) is cut at that centre.
    """
    right = np.zeros_like(both, dtype=bool)
    left = np.zeros_like(both, dtype=bool)
    if not both.any():
        return right, left
    cols = np.nonzero(both.any(axis=0))[0]
    mid = (cols[0] + cols[-1]) / 2.0
    labels, n = ndimage.label(both)
    xs = np.arange(both.shape[1])[None, :]
    for k in range(1, n + 1):
        comp = labels == k
        n_img_left = int((comp & (xs < mid)).sum())
        n_img_right = int(comp.sum()) - n_img_left
        if min(n_img_left, n_img_right) > 0.2 * comp.sum():
            right |= comp & (xs < mid)
            left |= comp & (xs >= mid)
        elif n_img_left >= n_img_right:
            right |= comp
        else:
            left |= comp
    return right, left


def _cache_one(args: tuple[str, Record, int]) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, bool]:
    data, rec, size = args
    root = Path(data)
    loaded = load_image(root / rec.file)
    square, geom = preprocess(loaded.pixels, size)
    img = np.round((square / 1024.0 + 1.0) * 127.5).astype(np.uint8)
    lungs = np.zeros((2, size, size), np.uint8)
    lung_src = 0  # 0 none, 1 V7 split by components, 2 radiologists' right/left
    if rec.right_mask and rec.left_mask:
        r = _read_mask(root / rec.right_mask)
        l_ = _read_mask(root / rec.left_mask)
        lung_src = 2
    elif rec.v7_mask:
        r, l_ = split_lungs(_read_mask(root / rec.v7_mask))
        lung_src = 1
    if lung_src:
        lungs[0] = geom.to_square(r, nearest=True) > 0.5
        lungs[1] = geom.to_square(l_, nearest=True) > 0.5
    opac = np.zeros((size, size), np.uint8)
    has_opac = rec.opacity_masks is not None
    if has_opac:
        union = np.zeros(loaded.pixels.shape, bool)
        for m in rec.opacity_masks or ():
            union |= _read_mask(root / m)
        opac = (geom.to_square(union, nearest=True) > 0.5).astype(np.uint8)
    return img, lungs, lung_src, opac, has_opac


def build_cache(data: Path, cache: Path, size: int = CACHE_SIZE, workers: int = 2) -> dict[str, np.ndarray]:
    """Preprocess every indexed image and mask to ``size`` px; saved as one .npz."""
    from tqdm import tqdm

    cache = Path(cache)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    records = build_index(data)
    jobs = [(str(data), r, size) for r in records]
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_cache_one, jobs, chunksize=8), total=len(jobs), desc="cache"))
    nan = float("nan")
    arrays = {
        "files": np.array([r.file for r in records]),
        "source": np.array([r.source for r in records]),
        "patient": np.array([r.patient for r in records]),
        "label": np.array([r.label for r in records], np.int64),
        "extent": np.array([nan if r.extent is None else r.extent for r in records], np.float32),
        "opacity": np.array([nan if r.opacity is None else r.opacity for r in records], np.float32),
        "image": np.stack([x[0] for x in results]),
        "lungs": np.stack([x[1] for x in results]),
        "lung_src": np.array([x[2] for x in results], np.int64),
        "opac": np.stack([x[3] for x in results]),
        "has_opac": np.array([x[4] for x in results], bool),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(cache)
    return arrays


def severity_patients(arrays: dict[str, np.ndarray]) -> set[str]:
    """Patients with a Cohen severity score: kept out of every segmenter's training."""
    return set(arrays["patient"][~np.isnan(arrays["extent"])].tolist())
