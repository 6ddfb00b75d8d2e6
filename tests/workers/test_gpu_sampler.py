"""bench_worker's "GPU busy" column: NVML sampling against a fake pynvml (no GPU needed)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_worker.py"


@pytest.fixture(scope="module")
def bench() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_worker", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeNvml(types.ModuleType):
    """The few pynvml calls the sampler makes; GPU 1 is the busy one."""

    class NVMLError(Exception):
        pass

    def __init__(self, readings: dict[str, list[int]], fail_after: int | None = None) -> None:
        super().__init__("pynvml")
        self.readings = readings
        self.fail_after = fail_after
        self.calls = 0
        self.initialised = False
        self.read = threading.Event()

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return ["GPU-aaaa", "GPU-bbbb"][index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.readings:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetUtilizationRates(self, handle: str) -> Any:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise self.NVMLError("GPU is lost")
        values = self.readings[handle]
        if self.calls > len(values):
            self.read.set()
        return types.SimpleNamespace(gpu=values[min(self.calls, len(values)) - 1], memory=0)


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a GPU box whose torch sees no device: CUDA_VISIBLE_DEVICES names the GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNvml]:
    fake = FakeNvml({"GPU-aaaa": [0, 0, 0], "GPU-bbbb": [90, 70, 80]})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    yield fake


def _sample(bench: types.ModuleType, nvml: FakeNvml) -> float | None:
    sampler = bench.GpuSampler.open(interval=0.001)
    assert sampler is not None
    sampler.start()
    assert nvml.read.wait(5), "the sampler never read the GPU"
    return sampler.finish()


def test_samples_the_gpu_cuda_uses(
    bench: types.ModuleType, nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA_VISIBLE_DEVICES=1: NVML's index 0 is another (idle) GPU; the busy one is measured."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    busy = _sample(bench, nvml)
    assert busy is not None and 70 <= busy <= 90
    assert not nvml.initialised  # finish() shuts NVML down


def test_gpu_named_by_uuid(bench: types.ModuleType, nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb,GPU-aaaa")
    assert (busy := _sample(bench, nvml)) is not None and busy >= 70


def test_mig_instance_has_no_reading(
    bench: types.ModuleType, nvml: FakeNvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-cccc")
    assert bench.GpuSampler.open() is None
    assert not nvml.initialised


def test_lost_gpu_keeps_the_samples_so_far(bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml({"GPU-aaaa": [10, 40, 60]}, fail_after=3)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sampler = bench.GpuSampler.open(interval=0.001)
    assert sampler is not None  # open() took the first reading (10), which does not count
    sampler.start()
    sampler.join(5)  # the thread ends at the first error
    assert sampler.error == "GPU is lost"
    assert sampler.finish() == 50  # 40 and 60


def test_no_nvml_no_sampler(bench: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    assert bench.GpuSampler.open() is None


def test_busy_column(bench: types.ModuleType) -> None:
    assert bench.busy_cell("cpu", None, 0.3) == "n/a"
    assert bench.busy_cell("cuda", 63.4, 0.3) == "63 %"
    assert bench.busy_cell("cuda", None, 0.3) == "~30%"  # no NVML: the time in the models
