"""The classifier's inputs: the opacity measures and the severity totals, each image's totals
from a ridge that never saw its patient group (round 3's split rule for severity inputs)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from models.evidence import (
    FEATURES,
    LOGGED,
    OPACITY_FEATURES,
    OpacityClassifier,
    classifier_inputs,
    transform,
)
from models.registry import build_model
from models.training import round3


class RecordingRidge:
    """Stands in for :class:`models.severity.LungRidge`: feature 0 of each lung is the row's
    index, so every fit and every prediction says which images it used."""

    fits: list[set[int]] = []

    def __init__(self, ident: float) -> None:
        self.ident = ident

    @classmethod
    def fit(cls, feats: np.ndarray, targets: dict[str, np.ndarray]) -> RecordingRidge:
        cls.fits.append({int(r) for r in feats[:, 0, 0]})
        return cls(float(len(cls.fits) - 1))

    def predict(self, feats: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        # the prediction is the number of the fit that made it
        total = np.full(len(feats), self.ident)
        return {"geographic_extent": {"total": total}, "opacity": {"total": total}}


def _data(n_groups: int, scored_every: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    groups = np.repeat(np.arange(n_groups), 3)
    feats = np.zeros((len(groups), 2, 4))
    feats[:, :, 0] = np.arange(len(groups))[:, None]
    extent = np.full(len(groups), np.nan)
    extent[::scored_every] = 1.0
    return feats, {"geographic_extent": extent, "opacity": extent.copy()}, groups


def test_severity_inputs_come_from_a_ridge_without_the_images_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.severity.LungRidge", RecordingRidge)
    RecordingRidge.fits = []
    feats, targets, groups = _data(n_groups=60, scored_every=2)
    released = RecordingRidge(-99.0)
    totals, how = round3.out_of_group_severity(feats, targets, groups, released)
    assert len(RecordingRidge.fits) == 5 and "refitted without" in how
    scored = ~np.isnan(targets["geographic_extent"])
    for i, value in enumerate(totals["geographic_extent"]):
        fit_rows = RecordingRidge.fits[int(value)]
        assert all(scored[r] for r in fit_rows)
        assert groups[i] not in {groups[r] for r in fit_rows}, "an image scored by its own group's ridge"


def test_too_few_scored_images_fall_back_to_the_released_ridge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models.severity.LungRidge", RecordingRidge)
    RecordingRidge.fits = []
    feats, targets, groups = _data(n_groups=10, scored_every=7)  # 5 scored images in all
    totals, how = round3.out_of_group_severity(feats, targets, groups, RecordingRidge(-99.0))
    assert RecordingRidge.fits == []
    assert (totals["geographic_extent"] == -99).all() and "released ridge on 5 of 5" in how


def test_transform_logs_involvement_and_severity_not_shape() -> None:
    x = classifier_inputs(np.full((1, 8), 0.5), np.array([3.0]), np.array([2.0]))
    assert x.shape == (1, len(FEATURES))
    z = transform(x)[0]
    for i, name in enumerate(FEATURES):
        logged = np.isclose(z[i], np.log(x[0, i] + 0.01))
        assert logged == (i in LOGGED), name
    assert FEATURES.index("peripheral_minus_central") not in LOGGED
    assert {FEATURES.index("geographic_extent_total"), FEATURES.index("opacity_total")} <= set(LOGGED)


def test_shipped_classifier_reads_the_severity_totals() -> None:
    clf = build_model("classification", "cpu")
    assert clf.features == FEATURES
    base = classifier_inputs(np.full((1, 8), 0.05), np.array([0.0]), np.array([0.0]))
    more = classifier_inputs(np.full((1, 8), 0.05), np.array([6.0]), np.array([4.0]))
    # more opacity by the radiologists' scale: less likely normal
    assert clf.predict_proba(more)[0, 0] < clf.predict_proba(base)[0, 0]


def test_a_classifier_of_other_features_is_refused() -> None:
    d: dict[str, Any] = OpacityClassifier(np.zeros(8), np.ones(8), np.zeros((4, 8)), np.zeros(4)).to_json()
    d["features"] = list(FEATURES[:8])
    with pytest.raises(ValueError, match="do not match"):
        OpacityClassifier.from_json(d)


def test_a_film_whose_totals_were_withheld_is_classified_without_them() -> None:
    """The shipped classifier carries a twin on the eight opacity measures alone; a film whose
    totals the quality check withheld gets its class from the twin, whatever the withheld totals
    say (a failed outline can make them anything)."""
    clf = build_model("classification", "cpu")
    assert clf.without_totals is not None and clf.without_totals.features == OPACITY_FEATURES
    opacity = np.full((2, 8), 0.05)
    low = classifier_inputs(opacity, np.array([0.0, 0.0]), np.array([0.0, 0.0]))
    high = classifier_inputs(opacity, np.array([8.0, 8.0]), np.array([6.0, 6.0]))
    withheld = np.array([False, True])
    p_low, p_high = clf.predict_proba(low, withheld=withheld), clf.predict_proba(high, withheld=withheld)
    assert p_high[0, 0] < p_low[0, 0]  # read with its totals, more extent is less normal
    np.testing.assert_allclose(p_high[1], p_low[1])  # read without them, the totals do not count
    # The twin survives the JSON, and one of other features is refused.
    again = OpacityClassifier.from_json(json.loads(json.dumps(clf.to_json())))
    np.testing.assert_allclose(again.predict_proba(high, withheld=withheld), p_high)
    d = clf.to_json()
    d["without_totals"]["features"] = list(FEATURES)  # type: ignore[index]
    with pytest.raises(ValueError, match="do not match"):
        OpacityClassifier.from_json(d)
