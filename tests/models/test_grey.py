"""Grey matching, the model-selection variant that maps a film's grey onto one reference before
LungNet (:mod:`models.training.grey`): its mapping and the record it leaves in the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.preprocessing import load_image, model_square
from models.registry import REGISTRY_PATH, load_registry
from models.training import grey, variants


def _film(jpeg_path: Path) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    img8, geom = model_square(load_image(jpeg_path).pixels, 256)
    return img8, geom.content_box


def _reference() -> np.ndarray:
    """A reference quantile function unlike the test film's: a gamma of a straight ramp."""
    return 255 * grey.LEVELS**1.4


def _inside(img8: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    r0, r1, c0, c1 = box
    return img8[r0:r1, c0:c1].astype(float)


def test_a_matched_film_has_the_reference_grey(jpeg_path: Path) -> None:
    img8, box = _film(jpeg_path)
    ref = _reference()
    matched = grey.match(img8, box, ref)
    got = np.quantile(_inside(matched, box), grey.LEVELS[8:-8])
    assert np.abs(got - ref[8:-8]).max() < 6  # grey levels: only the film's 256 levels to map
    assert np.abs(np.quantile(_inside(img8, box), grey.LEVELS[8:-8]) - ref[8:-8]).max() > 15


def test_a_window_or_gamma_the_film_came_with_is_undone(jpeg_path: Path) -> None:
    """The same film at gamma 0.6, or with its contrast halved, matches to (nearly) the same
    picture: its ranks are unchanged. As it is, the two differ by far more."""
    img8, box = _film(jpeg_path)
    ref = _reference()
    base = grey.match(img8, box, ref).astype(float)
    for other in (255 * (img8 / 255.0) ** 0.6, img8 / 2.0 + 60):
        other8 = np.round(other).astype(np.uint8)
        assert np.abs(_inside(other8, box) - _inside(img8, box)).mean() > 15
        assert np.abs(_inside(grey.match(other8, box, ref), box) - _inside(base, box)).mean() < 2


def test_strength_blends_with_the_film_as_it_is(jpeg_path: Path) -> None:
    img8, box = _film(jpeg_path)
    ref = _reference()
    assert np.array_equal(grey.match(img8, box, ref, strength=0.0), img8)
    full, half = grey.match(img8, box, ref).astype(float), grey.match(img8, box, ref, 0.5).astype(float)
    assert np.abs(half - (full + img8) / 2).max() <= 1  # rounding


def test_the_reference_is_the_mean_quantile_function(jpeg_path: Path) -> None:
    img8, box = _film(jpeg_path)
    dark = np.clip(img8.astype(int) - 40, 0, 255).astype(np.uint8)
    ref = grey.reference(np.stack([img8, dark]), np.array([box, box]))
    assert ref.shape == grey.LEVELS.shape and np.all(np.diff(ref) >= 0)
    each = [np.quantile(_inside(x, box), grey.LEVELS) for x in (img8, dark)]
    assert np.allclose(ref, (each[0] + each[1]) / 2)


def test_record_keeps_the_rest_and_variants_keeps_it(tmp_path: Path) -> None:
    """The measures go under their strength; a later model-selection record keeps them."""
    registry = tmp_path / "registry.json"
    shutil.copy(REGISTRY_PATH, registry)
    result = {"strength": 0.5, "plain": {"lung_dice": {"cxr": 0.9}}, "matched": {"lung_dice": {"cxr": 0.8}}}
    grey.record(result, registry)
    selection = load_registry(registry)["models"]["classification"]["metrics"]["model_selection"]
    assert selection["grey_matching"]["strength 0.5"] == result
    variants.record({"variants": {"Z: a variant": {}}, "in_source_cv": {}}, registry)
    after = load_registry(registry)["models"]["classification"]["metrics"]["model_selection"]
    assert after["grey_matching"]["strength 0.5"] == result and list(after["variants"]) == ["Z: a variant"]
    shipped = load_registry(REGISTRY_PATH)["models"]
    others = {k: v for k, v in load_registry(registry)["models"].items() if k != "classification"}
    assert json.dumps(others, sort_keys=True) == json.dumps(
        {k: v for k, v in shipped.items() if k != "classification"}, sort_keys=True
    )


def test_an_empty_or_outside_box_is_an_error(jpeg_path: Path) -> None:
    img8, _ = _film(jpeg_path)
    for box in ((10, 10, 0, 256), (0, 256, 0, 300), (-5, 256, 0, 256)):
        with pytest.raises(ValueError, match="content box"):
            grey.match(img8, box, _reference())


def test_only_the_content_box_sets_the_map(jpeg_path: Path) -> None:
    """A film shrunk into a wide black frame: its content matches the reference; had the frame
    counted, a third of the pixels black, it would not."""
    img8, _ = _film(jpeg_path)
    framed = np.zeros((256, 256), np.uint8)
    framed[:, 64:192] = img8[:, ::2]
    box = (0, 256, 64, 192)
    ref = _reference()
    got = np.quantile(_inside(grey.match(framed, box, ref), box), grey.LEVELS[8:-8])
    assert np.abs(got - ref[8:-8]).max() < 6
    whole = np.quantile(_inside(grey.match(framed, (0, 256, 0, 256), ref), box), grey.LEVELS[8:-8])
    assert np.abs(whole - ref[8:-8]).max() > 30


def test_the_fine_tuning_reads_each_film_in_its_own_content_box(jpeg_path: Path) -> None:
    """The boxes :func:`grey.finetune` matches the corpus squares in are the node's own."""
    data = jpeg_path.parent
    assert grey.content_boxes(data, np.array([jpeg_path.name])) == [_film(jpeg_path)[1]]


def test_lungnet_fine_tunes_from_the_network_it_is_given() -> None:
    """``init`` is the network trained (no fresh one), at the learning rate asked for: at 0,
    no weight moves."""
    import torch

    from models.networks import LungNet
    from models.training.corpus import STYLE_V7
    from models.training.fit import Plan, train_lungnet

    rng = np.random.default_rng(0)
    n = 8
    lungs = np.zeros((n, 2, 256, 256), bool)
    lungs[:, 0, 60:200, 40:120], lungs[:, 1, 60:200, 136:216] = True, True
    arrays = {
        "lungs": lungs,
        "style": np.full(n, STYLE_V7),
        "opac": np.zeros((n, 256, 256), bool),
        "has_opac": np.zeros(n, bool),
        "label": np.arange(n) % 4,
        "source": np.array(["cxr"] * n),
    }
    images = torch.from_numpy(rng.integers(0, 255, (n, 256, 256), dtype=np.uint8))
    plan = Plan(quick=True)
    torch.manual_seed(0)
    for lr, moved in ((0.0, False), (1e-3, True)):
        init = LungNet().train()
        before = {k: v.clone() for k, v in init.state_dict().items()}
        net, log = train_lungnet(arrays, images, np.arange(n), None, plan, 0, "cpu", init, lr)
        assert net is init and log["steps"] == 1
        changed = any(
            not torch.equal(before[k], v) for k, v in net.state_dict().items() if v.is_floating_point()
        )
        weights = [k for k, v in net.state_dict().items() if k.endswith("weight") and v.dim() > 1]
        assert any(not torch.equal(before[k], net.state_dict()[k]) for k in weights) is moved
        assert changed  # batch-norm statistics move in any case
