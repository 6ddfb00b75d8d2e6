"""The worker's side alone: studies per hour and where a study's time goes.

No Orthanc, no Redis, no network: N copies of a real CR chest (new UIDs each)
are put on a local queue (``multiprocessing``) and 1, 2, 4... worker
processes take them, each running what a Celery task runs
(``workers.pipeline.process_instance``: read, decode, models, SR/SC/SEG
build, write, audit database and outbox, against a SQLite database of its
own), or with ``--no-database`` only the analysis and the DICOM outputs, so
that it runs on a bare GPU box with torch, this repository and the
pydicom/highdicom wheels.

    python benchmarks/bench_worker.py [--studies 20] [--processes 1,2,4]
        [--source RG1_UNCR.dcm] [--device cpu|cuda] [--no-database]

Prints the per-stage breakdown (median and mean ms per study, share of the
study) of the first setup, then studies/hour per number of processes, the
CPU seconds per study divided by the model seconds per study, and, with
CUDA, the GPU utilisation (NVML through nvidia-ml-py when importable, else
the fraction of the wall time the processes spent in the models).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WIDTHS = (9, 7, 10, 12, 15, 8)


def make_studies(source: str, folder: Path, count: int) -> list[tuple[str, str]]:
    """``count`` copies of ``source`` (a path or a pydicom-data name), each with new UIDs."""
    from pydicom import dcmread

    from tests.helpers import pydicom_data_file, with_new_uids, write

    template = dcmread(source if Path(source).is_file() else pydicom_data_file(source))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        ds = with_new_uids(template)
        out.append((str(ds.SOPInstanceUID), str(write(ds, folder / f"study{i}.dcm"))))
    return out


def _run_one(uid: str, path: str, out_dir: Path, database: bool) -> dict[str, float]:
    if database:
        from workers.pipeline import process_instance

        analysis = process_instance(uid, path)
        if analysis is None:
            raise RuntimeError(f"analysis of {uid} failed (see the log)")
        return analysis.stages
    from contextlib import nullcontext

    from pydicom import dcmread

    from workers.pipeline import _timed, analyze_image, model_batcher, write_outputs

    stages: dict[str, float] = {}
    batcher = model_batcher()
    with batcher.task() if batcher is not None else nullcontext():
        with _timed(stages, "read"):
            ds = dcmread(path)
        result = analyze_image(ds, stages=stages, batcher=batcher)
        write_outputs(ds, result, out_dir, stages)
    return stages


def worker(
    home: str,
    device: str,
    threads: int,
    batch_window_ms: float,
    database: bool,
    warm: tuple[str, str],
    tasks: int,
    jobs: Any,
    results: Any,
    ready: Any,
) -> None:
    """One worker process: warm up (models load), then take studies until the queue says stop."""
    os.environ["CXR_NODE_HOME"] = home
    os.environ["CXR_NODE_BATCH_WINDOW_MS"] = str(batch_window_ms)
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the Analyzer picks cuda whenever it sees one
    import torch

    torch.set_num_threads(threads)
    if database:
        from node.db.engine import upgrade

        upgrade()
    _run_one(*warm, Path(home) / "outputs", database)
    ready.wait()
    cpu0 = time.process_time()

    def take() -> None:  # one Celery task thread
        while (job := jobs.get()) is not None:
            results.put(_run_one(*job, Path(home) / "outputs", database))

    pool = [threading.Thread(target=take) for _ in range(tasks)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    from workers.pipeline import model_batcher

    batcher = model_batcher()
    # The warm-up study ran alone: its batch of 1 is left out.
    results.put({"cpu_s": time.process_time() - cpu0, "batches": batcher.batch_sizes[1:] if batcher else []})


def cuda_device_handle(nvml: Any) -> Any:
    """The NVML handle of the GPU the workers use (CUDA device 0), or None (a MIG instance).

    NVML numbers GPUs in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``;
    CUDA device 0 is the first GPU that variable names (an index or a UUID),
    so on a machine with several GPUs NVML's index 0 may be another, idle,
    GPU. The UUID torch reports for device 0 names the right one.
    """
    uuid = None
    try:
        import torch

        if torch.cuda.is_available():
            uuid = str(torch.cuda.get_device_properties(0).uuid)
    except (ImportError, RuntimeError, AttributeError):
        pass
    if uuid is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        uuid = visible if visible.startswith(("GPU-", "MIG-")) else None
        if uuid is None:
            return nvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
    if uuid.startswith("MIG-"):
        return None  # NVML reports no utilisation for a MIG instance
    return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")


class GpuSampler(threading.Thread):
    """The GPU's utilisation (NVML), sampled every ``interval`` s in a background thread.

    Make one with :meth:`open` (None when there is no NVML or no reading),
    ``start()`` it when the measured run starts and ``finish()`` it when the
    run ends: the mean of the samples in between, in per cent, or None.
    """

    def __init__(self, nvml: Any, handle: Any, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="gpu-sampler")
        self.samples: list[int] = []
        self.error: str | None = None
        self.interval = interval
        self._nvml = nvml
        self._handle = handle
        self._done = threading.Event()  # not "_stop": Thread has a method of that name

    @classmethod
    def open(cls, interval: float = 0.1) -> GpuSampler | None:
        try:
            import pynvml  # nvidia-ml-py
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            print(f"# no GPU utilisation: NVML: {exc}", file=sys.stderr)
            return None
        try:
            handle = cuda_device_handle(pynvml)
            if handle is not None:
                pynvml.nvmlDeviceGetUtilizationRates(handle)  # NotSupported (vGPU, MIG) shows here
                return cls(pynvml, handle, interval)
            print("# no GPU utilisation: a MIG instance", file=sys.stderr)
        except (pynvml.NVMLError, ValueError) as exc:
            print(f"# no GPU utilisation: NVML: {exc}", file=sys.stderr)
        pynvml.nvmlShutdown()
        return None

    def run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except self._nvml.NVMLError as exc:
                self.error = str(exc)
                return

    def finish(self) -> float | None:
        """Stop sampling; the mean utilisation in per cent, or None without samples."""
        self._done.set()
        if self.is_alive():
            self.join()
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass
        return statistics.mean(self.samples) if self.samples else None


def busy_cell(device: str, gpu_util: float | None, in_models: float) -> str:
    """The "GPU busy" column: NVML's mean, else "~" the time in the models, "n/a" without a GPU."""
    if device != "cuda":
        return "n/a"
    if gpu_util is not None:
        return f"{gpu_util:.0f} %"
    return f"~{in_models:.0%}"


def run_setup(args: argparse.Namespace, processes: int, root: Path) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # no torch state shared with the parent
    studies = make_studies(args.source, root / f"in-{processes}", args.studies + processes)
    warm, queued = studies[:processes], studies[processes:]
    jobs, results, ready = ctx.Queue(), ctx.Queue(), ctx.Barrier(processes + 1)
    for job in queued:
        jobs.put(job)
    for _ in range(processes * args.tasks):
        jobs.put(None)
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    procs = [
        ctx.Process(
            target=worker,
            args=(
                str(root / f"home-{processes}-{i}"),
                args.device,
                threads,
                args.batch_window_ms,
                args.database,
                warm[i],
            )
            + (args.tasks, jobs, results, ready),
        )
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    ready.wait(timeout=900)  # every process has loaded its models and analysed one study
    # nvidia-ml-py missing or no reading: the fraction of time in the models instead.
    sampler = GpuSampler.open() if args.device == "cuda" else None
    if sampler is not None:
        sampler.start()
    started = time.perf_counter()
    per_study: list[dict[str, float]] = []
    cpu_s = 0.0
    batches: list[int] = []
    finished = 0
    while finished < processes:
        item = results.get(timeout=1800)
        if "cpu_s" in item:
            cpu_s += item["cpu_s"]
            batches += item["batches"]
            finished += 1
        else:
            per_study.append(item)
    elapsed = time.perf_counter() - started
    gpu_util = sampler.finish() if sampler is not None else None
    for p in procs:
        p.join()
    model_s = sum(s.get("models", 0.0) for s in per_study)
    return {
        "per_study": per_study,
        "per_hour": len(per_study) / elapsed * 3600,
        "cpu_per_model": cpu_s / model_s if model_s else float("nan"),
        "gpu_util": gpu_util,
        "in_models": model_s / (elapsed * processes),
        "threads": threads,
        "batch": statistics.mean(batches) if batches else 1.0,
    }


def print_stages(per_study: list[dict[str, float]]) -> None:
    from workers.pipeline import STAGES

    totals = [sum(s.values()) for s in per_study]
    print(f"{'stage':<12} | {'median ms':>9} | {'mean ms':>9} | {'share':>6}")
    print(f"{'-' * 12}-|-{'-' * 9}-|-{'-' * 9}-|-{'-' * 6}")
    for stage in STAGES:
        values = [s.get(stage, 0.0) * 1000 for s in per_study]
        if not any(values):
            continue
        share = sum(values) / (sum(totals) * 1000)
        median, mean = statistics.median(values), statistics.mean(values)
        print(f"{stage:<12} | {median:>9.0f} | {mean:>9.0f} | {share:>6.1%}")
    ms = [t * 1000 for t in totals]
    print(f"{'total':<12} | {statistics.median(ms):>9.0f} | {statistics.mean(ms):>9.0f} | {1:>6.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--processes", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument("--source", default="RG1_UNCR.dcm", help="a DICOM file or a pydicom-data name")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per process (default: cores / processes)"
    )
    parser.add_argument("--no-database", dest="database", action="store_false")
    parser.add_argument(
        "--tasks", type=int, default=1, help="task threads per process (Celery's --pool threads -c N)"
    )
    parser.add_argument(
        "--batch-window-ms", type=float, default=0.0, help="micro-batching window (0: one forward per study)"
    )
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    counts = [int(n) for n in args.processes.split(",")]
    print(
        f"# worker only: {args.studies} studies of {Path(args.source).name}, device {args.device}, "
        f"{os.cpu_count()} cores, database {'SQLite' if args.database else 'none'}, "
        f"{args.tasks} task thread(s) per process, batch window {args.batch_window_ms:g} ms"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(counts):
            r = run_setup(args, n, Path(tmp))
            if i == 0:
                print(f"\n## per stage, {n} process(es), {r['threads']} torch thread(s) each")
                print_stages(r["per_study"])
                head = ("processes", "threads", "mean batch", "studies/hour", "CPU s / model s", "GPU busy")
                print("\n" + " | ".join(f"{h:>{w}}" for h, w in zip(head, WIDTHS, strict=True)))
                print("-|-".join("-" * w for w in WIDTHS))
            busy = busy_cell(args.device, r["gpu_util"], r["in_models"])
            cells = (
                n,
                r["threads"],
                f"{r['batch']:.1f}",
                f"{r['per_hour']:.0f}",
                f"{r['cpu_per_model']:.1f}",
                busy,
            )
            print(" | ".join(f"{c:>{w}}" for c, w in zip(cells, WIDTHS, strict=True)), flush=True)
            rows.append(r)


if __name__ == "__main__":
    main()
