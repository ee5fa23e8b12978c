"""Keras's own loss and metric functions against the bridge's torch twins, on the shapes of ``bench/run.py``.

The bridge keeps a torch twin of a Keras function (``keras_bridge/compile/losses/functional.py``,
``.../metrics/functional.py``) only where Keras's own costs more than 1.25x the twin or needs a host sync.
This script measures that ratio for every twin still kept: a loss forward and backward (as in a training
step), a metric forward only (metrics run on detached outputs). Shapes: the MLP workload's batch (64 x 10,
sparse labels) and the multi-I/O workload's outputs (32 x 1 regression, 32 x 5 one-hot); functions that no
workload uses get the MLP's batch size. Each pair is timed in interleaved rounds on one thread (CPU time);
the ratio is the median over rounds of Keras's time / the twin's.

Run: python bench/losses.py [--rounds 7] [--calls 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

os.environ.setdefault("KERAS_BACKEND", "torch")


def cases() -> List[Tuple[str, Callable, Callable, Dict[str, Any], Any, Any, bool]]:
    """``(label, keras_fn, twin, kwargs, y_true, y_pred, backward)`` for every twin the bridge keeps."""
    import keras
    import torch
    import torch.nn.functional as F

    import keras_bridge.compile.losses.functional as L
    import keras_bridge.compile.metrics.functional as metric_fns

    g = torch.Generator().manual_seed(0)
    probs = lambda *s: torch.softmax(torch.randn(*s, generator=g), -1)  # noqa: E731
    shapes = {  # y_true, y_pred for each kind of function
        "sparse": (torch.randint(0, 10, (64,), generator=g), torch.randn(64, 10, generator=g)),
        "onehot": (F.one_hot(torch.randint(0, 5, (32,), generator=g), 5).float(), probs(32, 5)),
        "regression": (torch.rand(32, 1, generator=g), torch.rand(32, 1, generator=g)),
        "binary": (torch.randint(0, 2, (64, 1), generator=g).float(), torch.rand(64, 1, generator=g)),
        "dense": (torch.rand(64, 10, generator=g), torch.rand(64, 10, generator=g) + 0.1),
    }
    kinds = {
        "sparse_categorical_crossentropy": "sparse", "categorical_crossentropy": "onehot",
        "binary_crossentropy": "binary", "sparse_categorical_accuracy": "sparse",
        "sparse_top_k_categorical_accuracy": "sparse", "categorical_accuracy": "onehot",
        "top_k_categorical_accuracy": "onehot", "binary_accuracy": "binary", "mean_squared_error": "regression",
        "mean_absolute_error": "regression", "mean_absolute_percentage_error": "regression", "accuracy": "binary",
    }  # fmt: skip
    out = []
    tables = [(L.native_losses(), True), (metric_fns.native_metrics(), False)]
    seen = set()
    for table, backward in tables:
        for keras_fn, twin in table.items():
            if (twin, backward) in seen or (not backward and twin in L.native_losses().values()):
                continue  # a loss used as a metric is judged as a loss
            seen.add((twin, backward))
            name = twin.__name__
            y_true, y_pred = shapes[kinds.get(name, "dense")]
            kwargs = {"from_logits": True} if name == "sparse_categorical_crossentropy" else {}
            out.append((name, keras_fn, twin, kwargs, y_true, y_pred, backward))
    del keras
    return out


def _time(fn: Callable, y_true: Any, y_pred: Any, kwargs: Dict[str, Any], backward: bool, calls: int) -> float:
    y_pred = y_pred.detach().requires_grad_(backward)
    start = time.process_time()
    for _ in range(calls):
        value = fn(y_true, y_pred, **kwargs)
        if backward:
            value.sum().backward()
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for name, keras_fn, twin, kwargs, y_true, y_pred, backward in cases():
        for fn in (keras_fn, twin):  # warm-up
            _time(fn, y_true, y_pred, kwargs, backward, 20)
        ratios, k_times, t_times = [], [], []
        for r in range(args.rounds):
            pair = (keras_fn, twin) if r % 2 == 0 else (twin, keras_fn)
            times = {id(fn): _time(fn, y_true, y_pred, kwargs, backward, args.calls) for fn in pair}
            k_times.append(times[id(keras_fn)])
            t_times.append(times[id(twin)])
            ratios.append(times[id(keras_fn)] / times[id(twin)])
        ratio = statistics.median(ratios)
        rows.append((name, "fwd+bwd" if backward else "fwd", statistics.median(k_times), statistics.median(t_times),
                     ratio, "keep the twin" if ratio > 1.25 else "use Keras's"))  # fmt: skip
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.rounds} rounds of {args.calls} calls, 1 thread, CPU time")
    print("| function | timed | Keras's µs | twin µs | ratio | decision |\n|---|---|---:|---:|---:|---|")
    for name, timed, k, t, ratio, decision in rows:
        print(f"| {name} | {timed} | {k:.1f} | {t:.1f} | {ratio:.2f}x | {decision} |")


if __name__ == "__main__":
    main()
