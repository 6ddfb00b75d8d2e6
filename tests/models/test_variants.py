"""Model selection's own pieces: the lung-shape measures, group DRO and the record it leaves in
the registry (:mod:`models.training.variants`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from models.registry import REGISTRY_PATH, load_registry
from models.training import variants


def _lungs(right_width: int, left_width: int, gap: int) -> np.ndarray:
    """Two rectangular lungs (rows 40-199) side by side, ``gap`` columns apart."""
    lungs = np.zeros((2, 256, 256), bool)
    lungs[0, 40:200, 30 : 30 + right_width] = True
    start = 30 + right_width + gap
    lungs[1, 40:200, start : start + left_width] = True
    return lungs


def test_lung_shape_of_two_rectangles() -> None:
    ratio, low_solidity, mean_solidity, aspect, gap = variants.lung_shape(_lungs(80, 80, 40))
    assert ratio == 0.0  # equal areas
    assert low_solidity == mean_solidity == 1.0  # a rectangle is its own convex hull
    assert np.isclose(aspect, np.log(160 / 200))
    assert np.isclose(gap, 40 / 200)  # the gap over the width across both lungs


def test_lung_shape_sees_a_small_lung_and_a_wide_heart() -> None:
    small = variants.lung_shape(_lungs(80, 40, 40))
    assert np.isclose(small[0], np.log(0.5))
    wide = variants.lung_shape(_lungs(60, 60, 80))
    assert wide[4] > variants.lung_shape(_lungs(60, 60, 40))[4]
    assert not variants.lung_shape(np.zeros((2, 256, 256), bool)).any()  # no lungs: zeros, no error


def test_group_dro_weighs_up_the_worst_cell() -> None:
    """Two sources; source 1's normals look like source 0's COVID-19. Plain weighting gives up
    on them; group DRO gives them more weight and so gets more of them right."""
    rng = np.random.default_rng(0)
    x0 = np.r_[rng.normal(0, 1, (200, 10)), rng.normal(2, 1, (200, 10))]
    x1 = np.r_[rng.normal(1.6, 1, (60, 10)), rng.normal(3, 1, (200, 10))]
    x = np.abs(np.r_[x0, x1])
    y = np.r_[np.zeros(200), np.full(200, 3), np.zeros(60), np.full(200, 3)].astype(int)
    src = np.r_[np.zeros(400), np.ones(260)].astype(str)
    hard = (src == "1.0") & (y == 0)
    plain = variants._group_dro(0.0)(x, y, src)(x)
    dro = variants._group_dro(3.0)(x, y, src)(x)
    assert (dro[hard].argmax(1) == 0).mean() > (plain[hard].argmax(1) == 0).mean()


def test_record_writes_the_table_and_keeps_the_rest(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    shutil.copy(REGISTRY_PATH, registry)
    before = load_registry(registry)
    table = {"Z: a variant": {"covid19_vs_normal": [0.5], "abnormal_vs_normal": [0.5]}}
    variants.record({"variants": table, "in_source_cv": {}}, registry)
    after = load_registry(registry)
    selection = after["models"]["classification"]["metrics"].pop("model_selection")
    before["models"]["classification"]["metrics"].pop("model_selection", None)
    assert selection["variants"] == table and selection["command"] == variants.COMMAND
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True)


def test_in_source_cv_reads_each_source_alone() -> None:
    """Within a source whose classes differ the AUC is high, within one whose classes look
    alike it is near chance, whatever the other source shows; a source with too few normals
    has no row."""
    rng = np.random.default_rng(1)
    n = 120
    apart = np.r_[rng.normal(0.1, 0.05, (n, 10)), rng.normal(0.6, 0.05, (n, 10))]
    alike = rng.normal(0.3, 0.1, (2 * n, 10))
    few = rng.normal(0.3, 0.1, (40, 10))
    x = np.abs(np.r_[apart, alike, few])
    pair = (np.zeros(n), np.full(n, 3))
    y = np.r_[pair[0], pair[1], pair[0], pair[1], np.zeros(20), np.full(20, 3)].astype(int)
    src = np.array(["montgomery"] * (2 * n) + ["shenzhen"] * (2 * n) + ["nih"] * 40)
    groups = np.arange(len(y))
    rows = variants.in_source_cv(x, y, src, groups)
    assert set(rows) == {"montgomery", "shenzhen"}
    assert rows["montgomery"]["covid19_vs_own_normals"] > 0.95
    assert abs(rows["shenzhen"]["abnormal_vs_normal"] - 0.5) < 0.15


def test_low_evidence_counts_the_clear_films_of_each_class_and_source() -> None:
    extent = np.array([0.0, 0.4, 3.0, 6.0, 0.1, 2.0, 0.0, 5.0])
    y = np.array([3, 3, 3, 3, 0, 0, 0, 2])
    src = np.array(["covid-radiography"] * 6 + ["nih"] * 2)
    rows = variants.low_evidence(extent, y, src, below=0.5)
    assert rows["below"] == 0.5
    assert rows["covid-radiography"]["covid19"] == {"n": 4, "share": 0.5}
    assert rows["covid-radiography"]["normal"] == {"n": 2, "share": 0.5}
    assert rows["nih"] == {"normal": {"n": 1, "share": 1.0}}  # other disease is neither row
    assert "hannover" not in rows  # no films, no row


def test_card_shows_the_low_evidence_table() -> None:
    from models.training import cards

    rows = {"below": 0.5, "covid-radiography": {"covid19": {"n": 640, "share": 0.153}}}
    text = cards._low_evidence(rows)
    assert "| covid-radiography | 15.3 % of 640 | – |" in text
    assert cards._low_evidence({}) == ""


def test_shipping_the_classifier_keeps_the_model_selection_table(tmp_path: Path) -> None:
    """round3 --ship rewrites the classification entry; the table variants --record wrote stays."""
    from models.training import round3

    registry = tmp_path / "registry.json"
    shutil.copy(REGISTRY_PATH, registry)
    table = {"variants": {"Z": {"covid19_vs_normal": [0.5], "abnormal_vs_normal": [0.5]}}, "in_source_cv": {}}
    variants.record(table, registry)
    out, weights = tmp_path / "out", tmp_path / "weights"
    out.mkdir()
    weights.mkdir()
    (out / "opacity-classifier.json").write_text("{}")
    np.savez(out / "loso.npz", logits=np.zeros((1, 4)))
    report = {"auto_threshold": 0.1, "temperature": 1.0, "labelled": {"cxr": {"covid19": 1}}, "x": 1}
    round3.release(out, report, weights, registry)
    metrics = load_registry(registry)["models"]["classification"]["metrics"]
    assert metrics["x"] == 1 and metrics["model_selection"]["variants"] == table["variants"]


def test_mirror_swaps_the_lungs_of_the_mirrored_pass() -> None:
    """LungNet's test-time flip (variant H) on a film symmetric left to right: both passes see the
    same film, so once the mirrored maps are flipped back with right and left swapped, each
    averaged lung map is the other's mirror image; without the swap or the flip back it is not."""
    import torch

    from models.networks import LUNG_PAIRS, OPACITY, LungNet
    from models.segmentation import lungnet_outputs

    torch.manual_seed(0)
    net = LungNet().eval()
    half = torch.randn(1, 1, 64, 32)
    x = torch.cat([half, torch.flip(half, dims=[-1])], dim=-1) * 300  # symmetric left to right
    plain = lungnet_outputs(net, x)["maps"][0]
    maps = lungnet_outputs(net, x, mirror=True)["maps"][0]
    for right, left in LUNG_PAIRS:
        # an untrained net is not symmetric: the plain pass's lungs are not each other's mirror
        assert not np.allclose(plain[right], plain[left][:, ::-1], atol=1e-4)
        np.testing.assert_allclose(maps[right], maps[left][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(maps[OPACITY], maps[OPACITY][:, ::-1], atol=1e-5)


def test_the_blend_is_c_and_e_with_their_logits_averaged() -> None:
    """Variant I (shipped) as one linear model: its logits are the mean of C's and of the same
    regression on the two totals alone, on the same standardised columns."""
    from sklearn.linear_model import LogisticRegression

    from models.evidence import FEATURES, OPACITY_FEATURES, transform
    from models.training import round3

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    x = np.abs(rng.normal(size=(120, len(FEATURES))) + y[:, None] * 0.5)
    src = np.array(["a", "b"] * 60)
    c = round3.fit(x, y, src)
    blend = round3.fit_blended(x, y, src, weight=0.5)
    n = len(OPACITY_FEATURES)
    totals = (transform(x)[:, n:] - c.mean[n:]) / c.scale[n:]
    e = LogisticRegression(C=round3.C_REG, max_iter=2000).fit(
        totals, y, sample_weight=round3.sample_weights(y, src)
    )
    expected = (c.logits(x) + e.decision_function(totals)) / 2
    np.testing.assert_allclose(blend.logits(x), expected, atol=1e-8)
    assert not np.allclose(blend.logits(x), c.logits(x))
    only_c = round3.fit_blended(x, y, src, weight=0.0)
    np.testing.assert_allclose(only_c.logits(x), c.logits(x))
