"""The worker's micro-batcher and the batched analysis (CPU; the GPU path is the same code)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workers.batching import MicroBatcher

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "models"


def _run_tasks(batcher: MicroBatcher[int, int], items: list[int]) -> dict[int, int]:
    results: dict[int, int] = {}
    start = threading.Barrier(len(items))

    def task(item: int) -> None:
        with batcher.task():
            start.wait()
            results[item] = batcher.submit(item)

    threads = [threading.Thread(target=task, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_tasks_arriving_together_share_batches_and_get_their_own_results() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: [x * 10 for x in xs], window=5.0, max_batch=4)
    results = _run_tasks(batcher, list(range(10)))
    assert results == {i: i * 10 for i in range(10)}
    assert sum(batcher.batch_sizes) == 10
    assert max(batcher.batch_sizes) == 4  # capped at max_batch
    assert len(batcher.batch_sizes) <= 4  # not one run per task


def test_a_lone_task_does_not_wait_for_the_window() -> None:
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda xs: xs, window=30.0)
    started = time.monotonic()
    with batcher.task():
        assert batcher.submit(7) == 7
    assert time.monotonic() - started < 15.0  # nobody else in a task: no 30 s wait
    assert batcher.submit(8) == 8  # outside task() too


def test_a_failed_batch_fails_each_of_its_tasks_and_the_batcher_goes_on() -> None:
    calls = []

    def run(xs: list[int]) -> list[int]:
        calls.append(list(xs))
        if len(calls) == 1:
            raise ValueError("out of memory")
        return xs

    batcher: MicroBatcher[int, int] = MicroBatcher(run, window=0.01)
    with pytest.raises(ValueError, match="out of memory"):
        batcher.submit(1)
    assert batcher.submit(2) == 2


@pytest.mark.slow
def test_analyze_batch_gives_each_image_the_single_image_result() -> None:
    import torch

    torch.set_num_threads(2)
    from models.inference import Analyzer
    from models.preprocessing import load_image

    analyzer = Analyzer(device="cpu")
    images = [load_image(p) for p in sorted(DATA_DIR.glob("*.jpg"))[:2]]
    batched = analyzer.analyze_batch(images)
    assert [r.extra["batch_size"] for r in batched] == [2, 2]
    for image, b in zip(images, batched, strict=True):
        single = analyzer.analyze(image)
        for name, p in single.classification.items():
            assert b.classification[name] == pytest.approx(p, abs=1e-5)
        assert b.severity.geographic_extent == pytest.approx(single.severity.geographic_extent, abs=1e-4)
        assert b.severity.opacity == pytest.approx(single.severity.opacity, abs=1e-4)
        assert np.array_equal(b.right_lung, single.right_lung)
        assert np.array_equal(b.left_lung, single.left_lung)
        np.testing.assert_allclose(b.heatmap, single.heatmap, atol=1e-4)
        assert b.image.shape == image.pixels.shape
