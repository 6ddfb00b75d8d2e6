"""The severity ridge's per-lung scores say one thing of each lung."""

from __future__ import annotations

import numpy as np
import pytest

from models.severity import LungRidge


def one_feature_ridge(extent_intercept: float, opacity_intercept: float) -> LungRidge:
    """Per lung: extent = x + extent_intercept / 2, opacity = x + opacity_intercept / 2."""
    return LungRidge(
        mean=np.zeros(1),
        scale=np.ones(1),
        coef={"geographic_extent": np.ones(1), "opacity": np.ones(1)},
        intercept={"geographic_extent": extent_intercept, "opacity": opacity_intercept},
        alpha={},
    )


@pytest.mark.parametrize(
    ("extent_intercept", "opacity_intercept"),
    [(0.0, 1.0), (1.0, 0.0), (0.66, 1.0)],
    ids=["extent-clear-opacity-not", "opacity-clear-extent-not", "extent-reads-0.0-opacity-not"],
)
def test_a_lung_either_score_calls_clear_is_clear_in_both(
    extent_intercept: float, opacity_intercept: float
) -> None:
    ridge = one_feature_ridge(extent_intercept, opacity_intercept)
    # right lung: one score under 0.05 (0.0 as the report shows it; -0.3 + 0.33 = 0.03 in the third
    # case), the other above; left: both above
    feats = np.array([[[-0.3], [1.0]]])
    pred = ridge.report(feats)
    assert pred["geographic_extent"]["right"][0] == 0.0
    assert pred["opacity"]["right"][0] == 0.0
    assert pred["geographic_extent"]["left"][0] == pytest.approx(1.0 + extent_intercept / 2)
    assert pred["opacity"]["left"][0] == pytest.approx(1.0 + opacity_intercept / 2)
    for k in ("geographic_extent", "opacity"):
        assert pred[k]["total"][0] == pytest.approx(pred[k]["right"][0] + pred[k]["left"][0])
    # The classifier's evidence is the ridge as fitted: the right lung's sub-threshold score counts.
    raw = ridge.predict(feats)
    zeroed = sum(max(raw[k]["right"][0], 0.0) for k in raw)
    assert zeroed > 0.15
    reported = sum(pred[k]["total"][0] for k in pred)
    assert sum(raw[k]["total"][0] for k in raw) == pytest.approx(reported + zeroed)


def test_the_per_lung_range_still_holds() -> None:
    pred = one_feature_ridge(0.0, 0.0).report(np.array([[[9.0], [0.5]]]))
    assert pred["geographic_extent"]["right"][0] == 4.0 and pred["opacity"]["right"][0] == 3.0
    assert pred["geographic_extent"]["total"][0] == pytest.approx(4.5)
