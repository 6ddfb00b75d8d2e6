"""Lung Dice on the committed held-out slice (patients the segmenter never saw)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from models.preprocessing import load_image
from models.registry import entry
from models.training.evaluation import dice

from .conftest import DATA_DIR

MARGIN = 0.05


def test_heldout_lung_dice(analyzer, heldout_slice) -> None:
    card = entry("segmentation")["metrics"]["heldout"]["cxr"]["dice"]["mean"]
    scores, right_left = [], []
    for row in heldout_slice:
        loaded = load_image(DATA_DIR / row["image"])
        res = analyzer.analyze(loaded)
        r = np.asarray(Image.open(DATA_DIR / row["right"])) > 127
        l_ = np.asarray(Image.open(DATA_DIR / row["left"])) > 127
        scores.append(dice(res.right_lung | res.left_lung, r | l_))
        right_left.append((dice(res.right_lung, r) + dice(res.left_lung, l_)) / 2)
    assert np.mean(scores) >= card - MARGIN, scores
    assert np.mean(right_left) >= card - 2 * MARGIN, right_left
