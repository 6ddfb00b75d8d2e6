"""Similar-case retrieval embedding (Keidar et al. 2021: nearest neighbours in a network's
embedding space).

The embedding of an image is LungNet's encoder features (strides 16 and 32)
averaged over each lung (:func:`models.networks.lung_features`, already
computed for the severity score), right then left, standardised, projected
onto :data:`DIM` principal components and L2-normalised, so that the inner
product of two embeddings is their cosine similarity. The projection is
fitted on LungNet's training images only and evaluated on its held-out
patients, who are new to LungNet and to the projection.

    python -m models.training.retrieval --cache corpus256.npz    # fit, evaluate, ship, register

The index over the node's archive lives in :mod:`node.archive`; fitting and evaluating the
projection in :mod:`models.training.retrieval`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 64
VERSION = "2.0.0"
NAME = "lung-embedding"
FILE = "retrieval-pca.npz"


@dataclass(frozen=True)
class Projection:
    """Standardise, project onto principal components, L2-normalise."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    components: np.ndarray  # (DIM, F)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def transform(self, pooled: np.ndarray) -> np.ndarray:
        """(N, 2, C) lung-pooled features -> (N, DIM) float32 unit vectors."""
        raw = np.asarray(pooled, np.float32).reshape(len(pooled), -1)
        z = ((raw - self.mean) / self.scale) @ self.components.T
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return (z / np.maximum(norm, 1e-6)).astype(np.float32)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, mean=self.mean, scale=self.scale, components=self.components)
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> Projection:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                z["mean"].astype(np.float32),
                z["scale"].astype(np.float32),
                z["components"].astype(np.float32),
            )
