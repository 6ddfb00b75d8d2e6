"""The chest-likeness's limit and its held-out measure (:mod:`models.training.orientation`): the
films of the source held out never touch the PCA or the limit they are measured against."""

from __future__ import annotations

import numpy as np
import pytest

from models.orientation import N_COMPONENTS, N_FEATURES, ChestLikeness
from models.training.orientation import LIMIT_MARGIN, chest_likeness, chest_limit, held_out_chest


def _films(n_per_source: int = 40, sources: str = "abc", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features of low rank plus noise, as the HOG of similar films has."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(8, N_FEATURES))
    n = n_per_source * len(sources)
    x = rng.normal(size=(n, 8)) @ basis + 0.3 * rng.normal(size=(n, N_FEATURES))
    return x, np.repeat(np.array(list(sources)), n_per_source)


def test_the_held_out_source_does_not_set_its_own_limit() -> None:
    x, src = _films()
    before = held_out_chest(x, src, "c")
    changed = x.copy()
    changed[src == "c"] *= 50  # wildly unlike the others: would raise a limit it took part in
    after = held_out_chest(changed, src, "c")
    assert after.limit == before.limit
    np.testing.assert_allclose(after.components, before.components)
    assert (after.atypical(changed[src == "c"]) >= 1).all()  # and it is called unlike them


def test_the_limit_is_the_worst_held_out_film_with_a_margin() -> None:
    x, src = _films()
    worst = max(ChestLikeness.fit(x[src != s]).distance(x[src == s]).max() for s in "abc")
    assert chest_limit(x, src) == pytest.approx(LIMIT_MARGIN * worst)
    model = ChestLikeness.fit(x, chest_limit(x, src))
    assert (model.atypical(x) < 1).all()  # every film of the training sources inside it


def test_too_little_to_fit_is_an_error_not_a_model() -> None:
    x, src = _films()
    with pytest.raises(ValueError, match="two sources"):
        chest_limit(x[src == "a"], src[src == "a"])
    with pytest.raises(ValueError, match="films"):
        ChestLikeness.fit(x[: 2 * N_COMPONENTS])


def test_the_other_pictures_measure_stands_beside_the_distance() -> None:
    """A film is atypical by the larger of the two measures; generated pictures unlike the films
    are over the line, the films under it."""
    x, src = _films()
    others = np.random.default_rng(1).normal(size=(90, N_FEATURES)) + 1.0  # off the films' mean
    chest = chest_likeness(x, src, others)
    assert chest.other is not None
    both = np.vstack([x, others])
    ratio = chest.distance(both) / chest.limit
    np.testing.assert_allclose(
        chest.atypical(both), np.fmax(ratio, chest.other.proba(both) / chest.other.cut)
    )
    assert (chest.atypical(x) < 1).all() and (chest.other.proba(others) >= chest.other.cut).all()
    alone = held_out_chest(x, src, "c")  # no pictures: the distance alone
    assert alone.other is None and np.allclose(alone.atypical(both), alone.distance(both) / alone.limit)


def test_the_held_out_sources_altered_copies_stay_out_of_its_fit() -> None:
    """The altered copies of the held-out source's films (:func:`altered_features` rows of that
    source) take no part in the regression it is measured against; those of the other sources
    do."""
    x, src = _films()
    others = np.random.default_rng(1).normal(size=(90, N_FEATURES)) + 1.0
    altered = {"x": x + 0.1 * np.random.default_rng(2).normal(size=x.shape), "source": src}
    before = held_out_chest(x, src, "c", others, altered)
    poisoned = {"x": altered["x"].copy(), "source": src}
    poisoned["x"][src == "c"] = others[: (src == "c").sum()]  # would teach it the pictures are films
    after = held_out_chest(x, src, "c", others, poisoned)
    assert before.other is not None and after.other is not None
    np.testing.assert_allclose(after.other.coef, before.other.coef)
    poisoned["x"][src == "a"] = others[: (src == "a").sum()]  # a training source's copies do count
    changed = held_out_chest(x, src, "c", others, poisoned)
    assert changed.other is not None and not np.allclose(changed.other.coef, before.other.coef)
