"""Every image of the third data release, its class, its source and its patient group.

Seven sources (the leave-one-source-out units): ``cxr`` (cxr-collection), ``covid-radiography``,
``hannover``, ``covid-cxnet``, ``nih`` (nih-sample + nih-extra), ``montgomery``, ``shenzhen``.

Classes follow :mod:`models.training.corpus` for the first four folders; the new folders add:
covid-radiography ``covid19``/``normal`` as labelled; hannover -> covid19 (its 92 links are
cxr-collection images and stay there); covid-cxnet -> covid19, except upstream names ending in
``-`` (films read as normal in a PCR-positive patient: label ambiguous) and names with ``p``
(children) and the one unlabelled row, which are left out.

Patient groups (no image, patient or near-duplicate in two splits):
ids where the source has them (cxr ``patientid``, hannover ``patient_id`` joined to
cxr-collection through its links, NIH ``Patient ID`` across both NIH folders, NLM ids,
covid-cxnet ``patient_id`` where present), then every pair of images whose 64-bit difference
hash (256 bits, of the 256-px square) differs in at most :data:`DHASH_BITS` bits is merged
(union-find, across all sources). A 64-bit hash within 4 bits merged unrelated chest films into
giant groups; at 256 bits / 12, 26 of 3,619 images have a near-duplicate. Serial films of one
patient without ids (BIMCV in covid-radiography) are *not* near-duplicates by this hash and may
remain in separate groups.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.result import CLASSES
from models.training.corpus import build_index

SOURCES = ("cxr", "covid-radiography", "hannover", "covid-cxnet", "nih", "montgomery", "shenzhen")
DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"  # ../shared/data beside the checkout
HASH_SIDE = 16  # a 256-bit difference hash, as the data release deduplicated with
DHASH_BITS = 12  # near-duplicates: at most this many of the 256 bits differ


@dataclass
class Item:
    file: str  # relative to the data directory
    source: str
    patient: str  # id-based group before hash merging
    label: int  # index in CLASSES; -1: not used for classification
    extent: float = float("nan")
    opacity: float = float("nan")
    in_cohen_2020: bool = False
    projection: str = ""
    link: str = ""  # a second id of the same patient (hannover's id on a cxr-collection image)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def index(data: Path) -> list[Item]:
    """All images of ``data`` (a stable order: the corpus first, then the new folders)."""
    data = Path(data)
    items: list[Item] = []
    for r in build_index(data):
        items.append(Item(r.file, r.source, r.patient, r.label, r.extent, r.opacity, r.in_cohen_2020))
    by_file = {it.file: it for it in items}
    cov = CLASSES.index("covid19")
    for row in _rows(data / "covid-radiography" / "labels.csv"):
        rel = f"covid-radiography/images/{row['file']}"
        if (data / rel).is_file():
            items.append(Item(rel, "covid-radiography", f"cr-{row['file']}", CLASSES.index(row["label"])))
    for row in _rows(data / "hannover" / "metadata.csv"):
        pid = f"hannover-{row['patient_id']}"
        if row["cxr_collection_file"]:
            linked = by_file.get(f"cxr-collection/images/{row['cxr_collection_file']}")
            if linked is not None:  # the same patient in both folders: one group
                linked.link = pid
                linked.projection = row["projection"]
            continue
        rel = f"hannover/images/{row['file']}"
        if (data / rel).is_file():
            items.append(Item(rel, "hannover", pid, cov, projection=row["projection"]))
    for row in _rows(data / "covid-cxnet" / "labels.csv"):
        rel = f"covid-cxnet/images/{row['file']}"
        stem = row["upstream_file"].rsplit(".", 1)[0].lower()
        if not (data / rel).is_file():
            continue
        excluded = not row["label"] or stem.endswith("-") or "p" in stem
        pid = f"cxnet-{row['patient_id']}" if row["patient_id"] else f"cxnet-{row['file']}"
        items.append(Item(rel, "covid-cxnet", pid, -1 if excluded else cov, projection=row["view"].lower()))
    return items


def dhash(img8: np.ndarray, side: int = HASH_SIDE) -> np.ndarray:
    """Difference hash (Krawetz) of ``side`` x ``side`` bits, packed: (side + 1) x side area-averaged
    thumbnail, left brighter than right per row."""
    small = np.asarray(
        Image.fromarray(np.asarray(img8, np.uint8)).resize((side + 1, side), Image.Resampling.BOX), np.int16
    )
    return np.packbits((small[:, 1:] > small[:, :-1]).flatten())


def hash_groups(keys: list[list[str]], hashes: np.ndarray, max_bits: int = DHASH_BITS) -> np.ndarray:
    """Groups of images sharing any id in ``keys[i]`` or a near-duplicate hash (union-find)."""
    n = len(keys)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, ids in enumerate(keys):
        for p in ids:
            if p in first:
                union(first[p], i)
            else:
                first[p] = i
    h = np.asarray(hashes, np.uint8)  # (n, bytes): packed hashes
    table = np.array([bin(i).count("1") for i in range(256)], np.uint16)
    for i in range(n - 1):
        close = np.nonzero(table[np.bitwise_xor(h[i + 1 :], h[i])].sum(1) <= max_bits)[0]
        for j in close:
            union(i, i + 1 + int(j))
    return np.array([find(i) for i in range(n)], np.int64)
