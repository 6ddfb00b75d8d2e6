"""The development corpus: every source of ``../shared/data`` indexed, and one compact cache.

Sources (``source`` column) and what each gives:

- ``cxr``: cxr-collection (COVID-19 image data collection): classes, V7 lung
  masks, radiologists' right/left lung and opacity masks, Cohen severity scores
  (the 234 rows of ``severity-scores-extended.csv``);
- ``nih``: nih-sample and nih-extra (NIH Clinical Center), one hospital, grouped
  by NIH Patient ID across both folders;
- ``montgomery`` and ``shenzhen``: nlm-tb (normal / tuberculosis) with lung masks
  drawn in the NLM style (the lung behind the heart left out).

Labels (Basu et al.'s four classes), decided here and documented in the cards:
cxr ``COVID-19*`` -> covid19; cxr non-COVID pneumonias and lipoid pneumonia ->
pneumonia; cxr ``ARDS`` -> other_disease; ``No Finding`` -> normal; NIH with
``Pneumonia`` among its labels -> pneumonia, other NIH findings -> other_disease;
NLM tuberculosis -> other_disease, NLM normal -> normal; cxr ``todo``/``Unknown``
-> excluded from classification (kept for pretraining and lung masks).

Opacity scores: rows scored on the 0-8 scale (``opacity_scale`` 8, the later
Stony Brook rows) are rescaled by 6/8 onto Cohen's 0-6 scale; the raw value and
the scale are kept.

The cache holds every image preprocessed to 256 px (:func:`models.preprocessing.preprocess`)
as JPEG (quality 90) bytes, and masks bit-packed, so that the whole corpus is
about 40 MB: small enough to travel to a GPU machine, and the same bytes feed
training there and evaluation here.
"""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from models.preprocessing import Geometry, load_image, model_square
from models.result import CLASSES

logger = logging.getLogger(__name__)

SIZE = 256
JPEG_QUALITY = 90
SOURCES = ("cxr", "nih", "montgomery", "shenzhen")
# Lung-mask styles: V7 and the radiologists draw the whole lung field; NLM leaves
# out the lung behind the heart. Kept apart (separate output heads), never mixed.
STYLE_NONE, STYLE_V7, STYLE_RADIOLOGIST, STYLE_NLM = 0, 1, 2, 3
OPACITY_CLASSES = ("ground-glass", "consolidation")
EXCLUDED_FINDINGS = {"todo", "unknown", ""}


@dataclass
class Record:
    """One image of the development data."""

    file: str  # relative to the data directory
    source: str  # one of SOURCES
    patient: str  # "<source>-<id>": split groups
    finding: str
    label: int  # index in CLASSES; -1: not used for classification
    style: int = STYLE_NONE
    masks: tuple[str, ...] = ()  # (both) for V7/NLM, (right, left) for radiologists
    opacity_masks: tuple[str, ...] | None = None  # None: not segmented by radiologists
    extent: float = float("nan")  # Cohen geographic extent 0-8
    opacity: float = float("nan")  # Cohen opacity, 0-6 scale
    opacity_raw: float = float("nan")
    opacity_scale: int = 0
    in_cohen_2020: bool = False
    extra: dict[str, str] = field(default_factory=dict)


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
    """Class index for an NIH ``Finding Labels`` string."""
    parts = set(labels.split("|"))
    if parts == {"No Finding"}:
        return CLASSES.index("normal")
    if "Pneumonia" in parts:
        return CLASSES.index("pneumonia")
    return CLASSES.index("other_disease")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _index_cxr(data: Path) -> list[Record]:
    cxr = data / "cxr-collection"
    recs: dict[str, Record] = {}
    for row in _rows(cxr / "metadata.csv"):
        rel = f"cxr-collection/images/{row['file']}"
        if (data / rel).is_file():
            recs[row["file"]] = Record(
                rel, "cxr", f"cxr-{row['patientid']}", row["finding"], cxr_label(row["finding"])
            )
    for row in _rows(cxr / "lung-masks" / "index.csv"):
        if row["file"] in recs:
            recs[row["file"]].style = STYLE_V7
            recs[row["file"]].masks = (f"cxr-collection/lung-masks/{row['mask']}",)
    seg: dict[str, dict[str, str]] = {}
    for row in _rows(cxr / "segmentations" / "index.csv"):
        seg.setdefault(row["file"], {})[row["class"]] = f"cxr-collection/segmentations/{row['mask']}"
    for file, m in seg.items():
        if file not in recs:
            continue
        rec = recs[file]
        if "right-lung" in m and "left-lung" in m:  # radiologists' masks win over V7's
            rec.style, rec.masks = STYLE_RADIOLOGIST, (m["right-lung"], m["left-lung"])
        rec.opacity_masks = tuple(m[c] for c in OPACITY_CLASSES if c in m)
    for row in _rows(cxr / "severity-scores-extended.csv"):
        scored_rec = recs.get(row["file"])
        if scored_rec is None:
            continue
        rec = scored_rec
        scale = int(row["opacity_scale"])
        rec.extent = float(row["geographic_mean"])
        rec.opacity_raw = float(row["opacity_mean"])
        rec.opacity = rec.opacity_raw * 6.0 / scale
        rec.opacity_scale = scale
        rec.in_cohen_2020 = row["in_cohen_2020"] == "1"
    return sorted(recs.values(), key=lambda r: r.file)


def _index_nih(data: Path) -> list[Record]:
    out = []
    for row in sorted(_rows(data / "nih-sample" / "labels.csv"), key=lambda r: r["file"]):
        rel = f"nih-sample/images/{row['file']}"
        if (data / rel).is_file():
            label = row["Finding Labels"]
            out.append(Record(rel, "nih", f"nih-{row['Patient ID']}", label, nih_label(label)))
    extra = data / "nih-extra" / "labels.csv"
    if extra.is_file():
        for row in sorted(_rows(extra), key=lambda r: r["file"]):
            rel = f"nih-extra/images/{row['file']}"
            if (data / rel).is_file():
                pid = str(int(row["patient_id"]))
                out.append(Record(rel, "nih", f"nih-{pid}", row["label"], nih_label(row["label"])))
    return out


def _index_nlm(data: Path) -> list[Record]:
    labels = data / "nlm-tb" / "labels.csv"
    if not labels.is_file():
        return []
    out = []
    for row in sorted(_rows(labels), key=lambda r: r["file"]):
        rel = f"nlm-tb/images/{row['file']}"
        if not (data / rel).is_file():
            continue
        tb = row["tuberculosis"] == "1"
        rec = Record(
            rel,
            row["source"],
            f"{row['source']}-{row['patient_id']}",
            "tuberculosis" if tb else "normal",
            CLASSES.index("other_disease" if tb else "normal"),
        )
        if row.get("mask") and (data / "nlm-tb" / "lung-masks" / row["mask"]).is_file():
            rec.style, rec.masks = STYLE_NLM, (f"nlm-tb/lung-masks/{row['mask']}",)
        out.append(rec)
    return out


def build_index(data: Path) -> list[Record]:
    """Every image of ``data`` with labels, masks and scores, in a stable order."""
    data = Path(data)
    records = _index_cxr(data) + _index_nih(data) + _index_nlm(data)
    logger.info("indexed %d images", len(records))
    return records


def read_mask(path: Path) -> np.ndarray:
    """A 0/255 mask PNG as bool (value 127, arrows drawn over V7 masks, is background)."""
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


def encode_jpeg(img8: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img8, np.uint8), mode="L").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"), np.uint8)


def square_and_masks(root: Path, rec: Record) -> tuple[np.ndarray, Geometry, np.ndarray, np.ndarray]:
    """One record's 256-px square (uint8), its geometry, its right and left lung masks (2, H, W)
    and its opacity mask, in that square."""
    loaded = load_image(root / rec.file)
    img8, geom = model_square(loaded.pixels, SIZE)
    lungs = np.zeros((2, SIZE, SIZE), bool)
    if rec.style == STYLE_RADIOLOGIST:
        right, left = read_mask(root / rec.masks[0]), read_mask(root / rec.masks[1])
    elif rec.style in (STYLE_V7, STYLE_NLM):
        right, left = split_lungs(read_mask(root / rec.masks[0]))
    if rec.style != STYLE_NONE:
        lungs[0] = geom.to_square(right, nearest=True) > 0.5
        lungs[1] = geom.to_square(left, nearest=True) > 0.5
    opac = np.zeros((SIZE, SIZE), bool)
    if rec.opacity_masks is not None:
        union = np.zeros(loaded.pixels.shape, bool)
        for m in rec.opacity_masks:
            union |= read_mask(root / m)
        opac = geom.to_square(union, nearest=True) > 0.5
    return img8, geom, lungs, opac


def _cache_one(args: tuple[str, Record]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """:func:`square_and_masks` as the cache stores it: the square as JPEG, the masks bit-packed."""
    data, rec = args
    img8, _, lungs, opac = square_and_masks(Path(data), rec)
    return encode_jpeg(img8), np.packbits(lungs, axis=-1), np.packbits(opac, axis=-1)


def build_cache(data: Path, cache: Path, workers: int = 2, limit: int | None = None) -> Path:
    """Preprocess every indexed image and mask into one compressed ``.npz`` (no pickles);
    with ``limit``, an evenly spread subset of that many (every source kept; smoke runs)."""
    from tqdm import tqdm

    cache = Path(cache)
    records = build_index(data)
    if limit and limit < len(records):
        keep = np.unique(np.linspace(0, len(records) - 1, limit).astype(int))
        records = [records[i] for i in keep]
    jobs = [(str(data), r) for r in records]
    with ProcessPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(_cache_one, jobs, chunksize=16), total=len(jobs), desc="cache"))
    offsets = np.cumsum([0] + [len(r[0]) for r in results]).astype(np.int64)
    arrays = {
        "files": np.array([r.file for r in records]),
        "source": np.array([r.source for r in records]),
        "patient": np.array([r.patient for r in records]),
        "label": np.array([r.label for r in records], np.int64),
        "style": np.array([r.style for r in records], np.int64),
        "extent": np.array([r.extent for r in records], np.float32),
        "opacity": np.array([r.opacity for r in records], np.float32),
        "opacity_raw": np.array([r.opacity_raw for r in records], np.float32),
        "opacity_scale": np.array([r.opacity_scale for r in records], np.int64),
        "in_cohen_2020": np.array([r.in_cohen_2020 for r in records], bool),
        "has_opac": np.array([r.opacity_masks is not None for r in records], bool),
        "jpeg": np.frombuffer(b"".join(r[0] for r in results), np.uint8),
        "jpeg_offsets": offsets,
        "lungs_bits": np.stack([r[1] for r in results]),
        "opac_bits": np.stack([r[2] for r in results]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(cache)
    return cache


def load_cache(cache: Path) -> dict[str, np.ndarray]:
    """The cache with images decoded to (N, 256, 256) uint8 and masks unpacked to bool."""
    with np.load(cache, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    raw, off = arrays.pop("jpeg").tobytes(), arrays.pop("jpeg_offsets")
    arrays["image"] = np.stack([decode_jpeg(raw[off[i] : off[i + 1]]) for i in range(len(off) - 1)])
    arrays["lungs"] = np.unpackbits(arrays.pop("lungs_bits"), axis=-1)[..., :SIZE].astype(bool)
    arrays["opac"] = np.unpackbits(arrays.pop("opac_bits"), axis=-1)[..., :SIZE].astype(bool)
    return arrays


def cached(data: Path, cache: Path | None = None) -> dict[str, np.ndarray]:
    """The cache at ``cache`` (default ``/tmp/cxr-models/corpus256.npz``), built first if absent."""
    cache = Path(cache or "/tmp/cxr-models/corpus256.npz")
    if not cache.is_file():
        build_cache(data, cache)
    return load_cache(cache)


def scored(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean: images with a Cohen severity score."""
    return ~np.isnan(arrays["extent"])


def scored_patients(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Boolean: images whose *patient* has any severity-scored image (kept out of every
    model whose output feeds the severity score, so no scored patient leaks)."""
    pats = set(arrays["patient"][scored(arrays)].tolist())
    return np.isin(arrays["patient"], list(pats))


def severity_targets(arrays: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """The Cohen scores of images ``idx``: geographic extent 0-8 and opacity on the 0-6 scale."""
    return {
        "geographic_extent": arrays["extent"][idx].astype(float),
        "opacity": arrays["opacity"][idx].astype(float),
    }
