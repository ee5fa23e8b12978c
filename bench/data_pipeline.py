"""Data pipeline benchmark: a CPU-bound PyDataset through the bridge and through Keras's own pipeline.

Run: python bench/data_pipeline.py [--batches 500] [--repeats 3]   (about 2 minutes on 2 cores)

Prints three tables (medians of the repeats):
1. batches/second of one epoch, iterated alone (no training), for Keras's PyDataset pipeline (what
   ``keras.Model.fit`` iterates on the torch backend) and the bridge's, inline / 2 threads / 2 processes;
2. the most batches in flight (fetched or being fetched, not yet consumed) behind a slow consumer,
   against ``max_queue_size``;
3. one ``fit`` epoch whose training step and data each cost a few ms: with worker processes the
   data loading overlaps the step.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from typing import Dict, List, Tuple

import keras
import numpy as np
import torch

import keras_bridge as kb  # selects keras's torch backend
from keras_bridge.data.adapters.pydataset import PyDatasetLoader


class CpuPyDataset(keras.utils.PyDataset):
    """About ``ms`` milliseconds of CPU work per batch of 32 x 784 float32, holding the GIL like decoding code."""

    def __init__(self, n_batches: int = 200, ms: float = 5.0, counter=None, **kwargs):
        super().__init__(**kwargs)
        self.n_batches, self.ms, self.counter = n_batches, ms, counter
        rng = np.random.default_rng(0)
        self.base = rng.normal(size=(32, 784)).astype("float32")
        self.labels = rng.integers(0, 10, size=32).astype("int64")

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, idx: int):
        if self.counter is not None:
            with self.counter.get_lock():
                self.counter.value += 1
        x = self.base + np.float32(idx)
        deadline = time.thread_time() + self.ms / 1000.0
        while time.thread_time() < deadline:
            x = x * np.float32(0.999) + np.float32(0.001)
        return x, self.labels


CONFIGS = {
    "inline (workers=1)": dict(workers=1),
    "2 threads": dict(workers=2),
    "2 processes": dict(workers=2, use_multiprocessing=True),
}


def keras_epoch(ds) -> int:
    """One epoch through Keras's adapter, as keras.Model.fit iterates it on the torch backend."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(ds, shuffle=False)
    adapter.on_epoch_begin()
    n = sum(1 for _ in adapter.get_torch_dataloader())
    adapter.on_epoch_end()
    return n


def bridge_epoch(ds) -> int:
    return sum(1 for _ in PyDatasetLoader(ds))


def throughput(batches: int, repeats: int) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Per (config, pipeline): median batches/s, median ratio to the same pipeline's serial rate in the
    same round, and CPU ms per batch (this process plus its workers).

    Rounds run every row once, interleaved, and ratios are taken within a round, so that background
    load on the machine (it is shared) hits the compared rows alike.
    """
    epochs = {"keras": keras_epoch, "bridge": bridge_epoch}
    runs: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for _ in range(repeats):
        for name, kwargs in CONFIGS.items():
            for pipeline, epoch in epochs.items():
                ds = CpuPyDataset(batches, **kwargs)
                t0, start = os.times(), time.perf_counter()
                n = epoch(ds)
                wall, t1 = time.perf_counter() - start, os.times()
                cpu = sum(t1[i] - t0[i] for i in range(4))  # user + system, self + children
                runs.setdefault((name, pipeline), []).append((n / wall, 1000 * cpu / n))
    serial = "inline (workers=1)"
    table: Dict[str, Dict[str, Dict[str, float]]] = {}
    for (name, pipeline), values in runs.items():
        base = runs[(serial, pipeline)]
        table.setdefault(name, {})[pipeline] = {
            "rate": statistics.median(r for r, _ in values),
            "x_serial": statistics.median(r / b for (r, _), (b, _) in zip(values, base)),
            "cpu_ms": statistics.median(c for _, c in values),
        }
    for name in table:
        k, b = runs[(name, "keras")], runs[(name, "bridge")]
        table[name]["bridge"]["x_keras"] = statistics.median(rb / rk for (rb, _), (rk, _) in zip(b, k))
    return table


def max_in_flight(use_multiprocessing: bool, max_queue_size: int) -> int:
    counter = multiprocessing.get_context("fork").Value("i", 0)
    ds = CpuPyDataset(
        40, ms=1.0, counter=counter, workers=2, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size
    )
    worst, consumed = 0, 0
    for _ in PyDatasetLoader(ds):
        consumed += 1
        time.sleep(0.01)  # a slow consumer: unbounded producers would run far ahead
        worst = max(worst, counter.value - consumed)
    return worst


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 10),
    )


class DataWait:
    """A Lightning callback timing each training step's end to the next one's start: the wait for data."""

    def __new__(cls):
        import lightning.pytorch as pl

        class _DataWait(pl.Callback):
            def __init__(self) -> None:
                self.waits: List[float] = []
                self.last = None

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if self.last is not None:
                    self.waits.append(time.perf_counter() - self.last)

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self.last = time.perf_counter()

        return _DataWait()


def fit_epoch(n: int, repeats: int, **kwargs) -> Tuple[float, float]:
    """Median ``(epoch seconds, ms per step spent waiting for data)`` of one-epoch fits.

    ``kwargs`` are PyDataset settings; with none, the data are in-memory arrays (the floor).
    """

    def data(batches: int) -> Dict:
        if kwargs:
            return dict(x=CpuPyDataset(batches, **kwargs))
        x = np.random.default_rng(0).normal(size=(32 * batches, 784)).astype("float32")
        return dict(x=x, y=np.zeros(32 * batches, "int64"), batch_size=32)

    module = kb.KerasModule(_mlp())
    module.compile(optimizer="sgd", loss=torch.nn.CrossEntropyLoss())
    module.fit(**data(4), epochs=1, verbose=0)  # warm-up (build, first workers)
    times, waits = [], []
    for _ in range(repeats):
        probe = DataWait()
        start = time.perf_counter()
        module.fit(**data(n), epochs=1, verbose=0, shuffle=False, callbacks=[probe])
        times.append(time.perf_counter() - start)
        waits.append(1000 * statistics.median(probe.waits))
    return statistics.median(times), statistics.median(waits)


def throughput_table(batches: int, repeats: int) -> None:
    table = throughput(batches, repeats)
    print("1. Iterating one epoch alone: batches/s, speed-up over the same pipeline's serial run, CPU ms per batch")
    print(
        f"| {'pipeline':<20} | {'Keras b/s':>9} | {'x serial':>8} | {'CPU ms':>6} | {'bridge b/s':>10} | "
        f"{'x serial':>8} | {'CPU ms':>6} | {'bridge / Keras':>14} |"
    )
    print(f"|{'-' * 22}|{'-' * 11}|{'-' * 10}|{'-' * 8}|{'-' * 12}|{'-' * 10}|{'-' * 8}|{'-' * 16}|")
    for name, row in table.items():
        k, b = row["keras"], row["bridge"]
        print(
            f"| {name:<20} | {k['rate']:9.1f} | {k['x_serial']:7.2f}x | {k['cpu_ms']:6.2f} | {b['rate']:10.1f} | "
            f"{b['x_serial']:7.2f}x | {b['cpu_ms']:6.2f} | {b['x_keras']:13.2f}x |"
        )


def in_flight_table() -> None:
    print("\n2. Most batches in flight behind a slow consumer (workers=2)")
    print(f"| {'max_queue_size':>14} | {'threads':>7} | {'processes':>9} |")
    print(f"|{'-' * 16}|{'-' * 9}|{'-' * 11}|")
    for q in (2, 4, 10):
        print(f"| {q:>14} | {max_in_flight(False, q):>7} | {max_in_flight(True, q):>9} |")


def fit_table(n: int, repeats: int) -> None:
    # One core trains (one intra-op thread), the workers use the rest: with torch's default 2 threads
    # the step and the workers oversubscribe 2 cores and OpenMP's spinning makes every row slow.
    torch.set_num_threads(1)
    print(f"\n3. One fit epoch of {n} batches: MLP 784-1024-1024-10 step (1 torch thread) + ~5 ms data per batch")
    print(f"| {'run':<40} | {'epoch s':>7} | {'wait for data, ms/step':>22} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 24}|")
    for name, kwargs in (
        ("in-memory arrays (the floor)", {}),
        ("PyDataset inline (workers=1)", dict(workers=1)),
        ("PyDataset, 1 worker process", dict(workers=1, use_multiprocessing=True)),
        ("PyDataset, 2 worker processes", dict(workers=2, use_multiprocessing=True)),
    ):
        seconds, wait = fit_epoch(n, repeats, **kwargs)
        print(f"| {name:<40} | {seconds:7.2f} | {wait:22.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", default="1,2,3", help="which tables to print, e.g. 1 or 1,3")
    args = parser.parse_args()
    sections = {int(v) for v in args.sections.split(",")}
    print(
        f"torch {torch.__version__}, keras {keras.__version__}, {multiprocessing.cpu_count()} CPU cores, "
        f"{args.batches} batches of 32x784 float32 at ~5 ms CPU each, medians of {args.repeats} rounds; "
        f"load average before: {os.getloadavg()[0]:.2f} (other work on the cores skews the parallel rows)\n"
    )

    if 1 in sections:
        throughput_table(args.batches, args.repeats)
    if 2 in sections:
        in_flight_table()
    if 3 in sections:
        fit_table(max(40, args.batches // 5), args.repeats)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
