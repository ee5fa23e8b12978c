"""Speed of KerasModule.fit against plain Lightning and Keras's own fit: every row of the README's table.

Each variant runs in its own child process (a fresh interpreter): it times the import of its framework
(``keras_bridge``, ``lightning`` or ``keras``) first, imports the rest, builds its data, notes its RSS,
does one short warm-up fit, then the timed fit, and reports the wall and CPU seconds of the timed fit,
its training steps and its peak RSS. The variants are interleaved over several rounds (the order
reversed every other round), so a slow spell of the shared machine hits the compared variants alike;
each row's ratio is the median over rounds of the ratio within a round.

Workloads (sizes for the default ``--samples 50000``; ``--quick`` divides them by 10 and runs one round):

* MLP: the guide's MLP (784-64-64-10), batch 64, 50k training + 10k validation samples, 1 epoch with
  validation, RMSprop, sparse categorical crossentropy from logits + accuracy (bare Lightning: no metric);
* guard cost (row 5b): the Keras MLP for 3 epochs of a third of the data, with and without a Keras callback
  that sets a Python attribute of a layer at each epoch start (checked by the guards before every step; the
  layer's ``call`` does not read it, so no graph is captured again);
* multi-I/O: the guide's two-input / two-output Keras model (img_input 32x32x3 + ts_input 20x10 ->
  score_output + class_output), 5k samples, batch 32, 1 epoch, dict losses, 3 metrics;
* callbacks: the MLP for 2 epochs of 25k samples with CSVLogger, EarlyStopping, ModelCheckpoint and a
  progress bar (Keras callbacks with ``verbose=1`` on the bridge; Lightning's own ones and TQDM bar);
* conv: a conv net on 32x32x3, batch 128, 10k + 2k samples, 1 epoch (compute-bound);
* PyDataset: one epoch of 400 batches of ``bench/data_pipeline.py``'s PyDataset (~5 ms CPU each),
  ``workers=2, use_multiprocessing=True``, iterated alone through Keras's pipeline and the bridge's.

Run: python bench/run.py [--quick] [--rounds 3] [--samples 50000] [--threads 1] [--only bridge lightning ...]
[--json records.json]. ``--only`` also accepts the extra variants torch, lightning_tm_bar, keras_fit_bar,
bridge_bar, bridge_auto and bridge_keras_auto (the fused training step off). About 13 minutes by default
and 2-2.5 minutes with ``--quick`` on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional

os.environ.setdefault("KERAS_BACKEND", "torch")


class Variant(NamedTuple):
    what: str
    kind: str  # workload: mlp, mio, cb, conv, pipe
    framework: Optional[str]  # the import timed first in the child
    default: bool = True


# In run order: the two sides of a comparison next to each other where possible.
VARIANTS: Dict[str, Variant] = {
    "lightning": Variant("bare LightningModule (no metrics, no logging), torch MLP", "mlp", "lightning"),
    "bridge": Variant("KerasModule(torch MLP).fit, verbose=0", "mlp", "keras_bridge"),
    "bridge_native": Variant(
        "KerasModule(torch MLP).fit, torch CrossEntropyLoss + 'accuracy' + 'rmsprop' (keras never imported)",
        "mlp",
        "keras_bridge",
    ),
    "lightning_tm": Variant("LightningModule + torchmetrics Accuracy + self.log, torch MLP", "mlp", "lightning"),
    "keras_fit": Variant("Keras 3 Model.fit (torch backend), Keras MLP, verbose=0", "mlp", "keras"),
    "bridge_keras": Variant("KerasModule(Keras MLP).fit, jit_compile='auto' (captured forward)", "mlp", "keras_bridge"),
    "bridge_keras_eager": Variant("KerasModule(Keras MLP).fit, jit_compile=False (eager)", "mlp", "keras_bridge"),
    "bridge_keras_3ep": Variant("KerasModule(Keras MLP).fit, 3 epochs of a third of the data", "mlp3", "keras_bridge"),
    "bridge_keras_guard": Variant(
        "bridge_keras_3ep with a callback setting a Python attribute of a layer each epoch", "mlp3", "keras_bridge"
    ),
    "keras_mio": Variant("Keras 3 Model.fit, guide's multi-input/multi-output model", "mio", "keras"),
    "bridge_mio": Variant("KerasModule(same model).fit, jit_compile='auto'", "mio", "keras_bridge"),
    "lightning_cb": Variant("Lightning CSVLogger + EarlyStopping + ModelCheckpoint + TQDM bar", "cb", "lightning"),
    "bridge_cb": Variant(
        "KerasModule(torch MLP).fit, Keras CSVLogger/EarlyStopping/ModelCheckpoint, verbose=1", "cb", "keras_bridge"
    ),
    "lightning_conv": Variant("bare LightningModule, conv net", "conv", "lightning"),
    "bridge_conv": Variant("KerasModule(conv net).fit, verbose=0", "conv", "keras_bridge"),
    "pipe_keras": Variant("Keras's PyDataset pipeline, workers=2 processes", "pipe", None),
    "pipe_bridge": Variant("the bridge's PyDataset pipeline, workers=2 processes", "pipe", None),
    # Extras, run only when named in --only.
    "torch": Variant("raw torch loop (index batching, loss+acc accumulated on device)", "mlp", "torch", False),
    "lightning_tm_bar": Variant("lightning_tm with Lightning's TQDM progress bar", "mlp", "lightning", False),
    "keras_fit_bar": Variant("keras_fit with verbose=1 (progress bar)", "mlp", "keras", False),
    "bridge_bar": Variant("bridge with verbose=1 (Keras progress bar)", "mlp", "keras_bridge", False),
    "bridge_auto": Variant(
        "bridge with the fused step off (Lightning's automatic optimization)", "mlp", "keras_bridge", False
    ),
    "bridge_keras_auto": Variant("bridge_keras with the fused step off", "mlp", "keras_bridge", False),
}


class Row(NamedTuple):
    number: str
    workload: str
    variant: str
    against: str
    baseline: str
    op: Optional[str]  # "<=" (ratio = variant / baseline) or ">=" (speed-up = baseline / variant); None: report
    target: Optional[float]
    metric: str = "step"  # step (ms/step), rss (peak MB), rss_growth (MB), import (s)


KM = "Keras MLP on the bridge"
ROWS = [
    Row("1", "torch MLP on the bridge", "bridge", "bare LightningModule", "lightning", "<=", 1.00),
    Row("2", "same", "bridge", "Lightning + torchmetrics + `self.log`", "lightning_tm", "<=", 0.50),
    Row("3", "same", "bridge", "Keras 3 `fit`, same architecture", "keras_fit", "<=", 0.45),
    Row("4", f"{KM} (`jit_compile='auto'`)", "bridge_keras", "Keras 3 `fit`, same model", "keras_fit", "<=", 0.45),
    Row("4b", f"{KM}, eager (`jit_compile=False`)", "bridge_keras_eager", "same", "keras_fit", None, None),
    Row("5", f"{KM} (`jit_compile='auto'`)", "bridge_keras", "same net as a torch module on the bridge", "bridge",
        "<=", 1.25),
    Row("5b", f"{KM}, a callback changes a layer's Python attribute each epoch (3 epochs)", "bridge_keras_guard",
        "the same fit without the callback", "bridge_keras_3ep", "<=", 1.10),
    Row("6", "guide's 2-input/2-output Keras model on the bridge", "bridge_mio", "Keras 3 `fit`", "keras_mio", "<=",
        0.50),
    Row("7", "torch MLP + Keras CSVLogger, EarlyStopping, ModelCheckpoint, verbose=1, on the bridge", "bridge_cb",
        "the same callbacks native to Lightning + TQDM bar", "lightning_cb", "<=", 1.0),
    Row("8", "conv net, 32x32x3, batch 128, on the bridge", "bridge_conv", "bare LightningModule", "lightning_conv",
        "<=", 1.03),
    Row("9", "PyDataset ~5 ms/batch, workers=2 processes, bridge", "pipe_bridge", "Keras's own PyDataset pipeline",
        "pipe_keras", ">=", 1.2),
    Row("10", "`import keras_bridge`", "keras_bridge", "`import lightning`", "lightning", None, None, "import"),
    Row("11", "peak RSS, torch MLP fit on the bridge (torch loss, keras not imported)", "bridge_native",
        "hand-written Lightning (torchmetrics + `self.log`)", "lightning_tm", "<=", 1.10, "rss"),
    Row("11b", "RSS growth in the fits (peak - RSS after imports + data)", "bridge_native", "same", "lightning_tm",
        None, None, "rss_growth"),
    Row("11c", "peak RSS, torch MLP fit on the bridge with a Keras loss object (the user imports keras)", "bridge",
        "same", "lightning_tm", None, None, "rss"),
]  # fmt: skip


# ----------------------------------------------------------------------------- data and models
def sizes(samples: int) -> Dict[str, int]:
    return {
        "mlp": samples,
        "mlp3": samples,  # 3 epochs of a third
        "mio": samples // 10,
        "cb": samples // 2,  # per epoch, 2 epochs
        "conv": samples // 5,
        "pipe": max(40, samples // 125),  # batches
    }


def make_data(n: int, n_val: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n + n_val, 784), dtype=np.float32)
    y = rng.integers(0, 10, n + n_val).astype("int64")
    return x[:n], y[:n], x[n:], y[n:]


def make_conv_data(n: int, n_val: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n + n_val, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, n + n_val).astype("int64")
    return x[:n], y[:n], x[n:], y[n:]


def make_mio_data(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = {"img_input": rng.random((n, 32, 32, 3), dtype=np.float32), "ts_input": rng.random((n, 20, 10), np.float32)}
    y = {"score_output": rng.random((n, 1), np.float32), "class_output": rng.random((n, 5), np.float32)}
    return x, y


def torch_mlp():
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )


def torch_conv():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 10),
    )


def keras_mlp():
    import keras
    from keras import layers

    inputs = keras.Input(shape=(784,), name="digits")
    x = layers.Dense(64, activation="relu")(inputs)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10, name="predictions")(x)
    return keras.Model(inputs, outputs)


def keras_multi_io():
    """The guide's model ("Training & evaluation with the built-in methods", multi-input/multi-output)."""
    import keras
    from keras import layers

    image_input = keras.Input(shape=(32, 32, 3), name="img_input")
    timeseries_input = keras.Input(shape=(None, 10), name="ts_input")
    x1 = layers.GlobalMaxPooling2D()(layers.Conv2D(3, 3)(image_input))
    x2 = layers.GlobalMaxPooling1D()(layers.Conv1D(3, 3)(timeseries_input))
    x = layers.concatenate([x1, x2])
    score_output = layers.Dense(1, name="score_output")(x)
    class_output = layers.Dense(5, name="class_output")(x)
    return keras.Model(inputs=[image_input, timeseries_input], outputs=[score_output, class_output])


def multi_io_compile_args() -> Dict[str, Any]:
    import keras

    return dict(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={"score_output": "mse", "class_output": "categorical_crossentropy"},
        metrics={
            "score_output": [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            "class_output": [keras.metrics.CategoricalAccuracy()],
        },
    )


# ----------------------------------------------------------------------------- variants
def run_torch(data, bs):
    import torch
    import torch.nn.functional as F

    x, y, xv, yv = (torch.from_numpy(a) for a in data)
    model = torch_mlp()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    model.train()
    loss_sum = torch.zeros(())
    correct = torch.zeros(())
    for idx in torch.randperm(len(x)).split(bs):
        xb, yb = x[idx], y[idx]
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * len(yb)
        correct += (out.argmax(-1) == yb).sum()
    model.eval()
    with torch.no_grad():
        vl = torch.zeros(())
        for i in range(0, len(xv), bs):
            out = model(xv[i : i + bs])
            vl += F.cross_entropy(out, yv[i : i + bs], reduction="sum")
    return float(loss_sum / len(x)), float(vl / len(xv))


def _lightning_module(net, with_metrics: bool):
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    import torchmetrics

    class LitModel(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = net
            if with_metrics:
                self.train_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
                self.val_acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)

        def training_step(self, batch, batch_idx):
            x, y = batch
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            if with_metrics:
                self.train_acc(out, y)
                self.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True)
                self.log("acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            if with_metrics:
                self.val_acc(out, y)
                self.log("val_loss", loss, prog_bar=True)
                self.log("val_acc", self.val_acc, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.RMSprop(self.parameters(), lr=1e-3)

    return LitModel()


def run_lightning(data, bs, net=torch_mlp, with_metrics=False, bar=False, callbacks_dir=None, epochs=1):
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y, xv, yv = (torch.from_numpy(a) for a in data)
    train = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=bs)
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

    # The TQDM bar explicitly: with `rich` installed, Lightning may pick its Rich bar instead.
    bars = [TQDMProgressBar()] if bar else []
    options: Dict[str, Any] = dict(logger=False, enable_checkpointing=False, callbacks=bars)
    if callbacks_dir is not None:
        from lightning.pytorch.loggers import CSVLogger

        options = dict(
            logger=CSVLogger(callbacks_dir),
            callbacks=[
                EarlyStopping(monitor="val_loss", patience=2),
                ModelCheckpoint(dirpath=callbacks_dir, monitor="val_loss", save_top_k=1),
                *bars,
            ],
        )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
        **options,
    )
    trainer.fit(_lightning_module(net(), with_metrics), train, val)


def run_keras(data, bs, verbose=0):
    import keras

    x, y, xv, yv = data
    model = keras_mlp()
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=bs, epochs=1, validation_data=(xv, yv), verbose=verbose)


def run_bridge_native(data, bs):
    """The torch MLP with torch's loss and the bridge's own metric and optimizer strings: keras is never imported."""
    import torch

    import keras_bridge as kb

    x, y, xv, yv = data
    module = kb.KerasModule(torch_mlp())
    module.compile(optimizer="rmsprop", loss=torch.nn.CrossEntropyLoss(), metrics=["accuracy"])
    module.fit(x, y, batch_size=bs, epochs=1, validation_data=(xv, yv), verbose=0, trainer={"accelerator": "cpu"})


def run_bridge(
    data, bs, verbose=0, model="torch", jit_compile="auto", callbacks_dir=None, epochs=1, guard=False, fused=True
):
    import keras

    import keras_bridge as kb

    x, y, xv, yv = data
    net = {"torch": torch_mlp, "keras": keras_mlp, "conv": torch_conv}[model]()
    module = kb.KerasModule(net)
    module.allow_fused_step = fused
    module.compile(
        optimizer=keras.optimizers.RMSprop(1e-3) if model == "keras" else "rmsprop",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    callbacks = []
    if callbacks_dir is not None:
        callbacks = [
            keras.callbacks.CSVLogger(os.path.join(callbacks_dir, "log.csv")),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=2),
            keras.callbacks.ModelCheckpoint(os.path.join(callbacks_dir, "best.keras"), save_best_only=True),
        ]
    if guard:

        class Anneal(keras.callbacks.Callback):
            # A Python attribute of a layer, changed each epoch (as KL annealing changes a `beta`): the guards are
            # checked before every step; no trace read `beta` (Dense ignores it), so no graph is captured again.
            def on_epoch_begin(self, epoch, logs=None):
                self.model.layers[1].beta = 0.5 * epoch

        callbacks.append(Anneal())
    module.fit(
        x,
        y,
        batch_size=bs,
        epochs=epochs,
        validation_data=(xv, yv),
        verbose=verbose,
        callbacks=callbacks,
        trainer={"accelerator": "cpu"},
    )


def run_multi_io(data, bs, bridge: bool):
    x, y = data
    model = keras_multi_io()
    if bridge:
        import keras_bridge as kb

        model = kb.KerasModule(model)
    model.compile(**multi_io_compile_args())
    model.fit(x, y, batch_size=bs, epochs=1, verbose=0)


def run_pipe(batches: int, bridge: bool) -> None:
    import data_pipeline as dp  # bench/ is this script's directory, first on sys.path

    ds = dp.CpuPyDataset(batches, workers=2, use_multiprocessing=True)
    n = dp.bridge_epoch(ds) if bridge else dp.keras_epoch(ds)
    assert n == batches, (n, batches)


def _with_dir(fn):
    """Run ``fn(directory)`` in a fresh temporary directory (callback files land there)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return fn(d)


RUNNERS = {
    "torch": lambda d, bs: run_torch(d, bs),
    "lightning": lambda d, bs: run_lightning(d, bs),
    "lightning_tm": lambda d, bs: run_lightning(d, bs, with_metrics=True),
    "lightning_tm_bar": lambda d, bs: run_lightning(d, bs, with_metrics=True, bar=True),
    "keras_fit": lambda d, bs: run_keras(d, bs, 0),
    "keras_fit_bar": lambda d, bs: run_keras(d, bs, 1),
    "bridge": lambda d, bs: run_bridge(d, bs, 0),
    "bridge_native": run_bridge_native,
    "bridge_bar": lambda d, bs: run_bridge(d, bs, 1),
    "bridge_auto": lambda d, bs: run_bridge(d, bs, 0, fused=False),
    "bridge_keras_auto": lambda d, bs: run_bridge(d, bs, 0, model="keras", fused=False),
    "bridge_keras": lambda d, bs: run_bridge(d, bs, 0, model="keras"),
    "bridge_keras_eager": lambda d, bs: run_bridge(d, bs, 0, model="keras", jit_compile=False),
    "bridge_keras_3ep": lambda d, bs: run_bridge(d, bs, 0, model="keras", epochs=3),
    "bridge_keras_guard": lambda d, bs: run_bridge(d, bs, 0, model="keras", epochs=3, guard=True),
    "keras_mio": lambda d, bs: run_multi_io(d, bs, bridge=False),
    "bridge_mio": lambda d, bs: run_multi_io(d, bs, bridge=True),
    "lightning_cb": lambda d, bs: _with_dir(
        lambda t: run_lightning(d, bs, with_metrics=True, bar=True, callbacks_dir=t, epochs=2)
    ),
    "bridge_cb": lambda d, bs: _with_dir(lambda t: run_bridge(d, bs, 1, callbacks_dir=t, epochs=2)),
    "lightning_conv": lambda d, bs: run_lightning(d, bs, net=torch_conv),
    "bridge_conv": lambda d, bs: run_bridge(d, bs, 0, model="conv"),
    "pipe_keras": lambda d, bs: run_pipe(d, bridge=False),
    "pipe_bridge": lambda d, bs: run_pipe(d, bridge=True),
}

# What each kind of child imports before its data and RSS baseline (the runners import these lazily).
PRELOAD = {
    "torch": ["torch"],
    "lightning": ["lightning.pytorch", "torchmetrics"],
    "keras": ["keras"],  # KERAS_BACKEND=torch is set at the top of this script
    "keras_bridge": ["keras_bridge", "keras"],
    None: ["keras_bridge", "keras", "data_pipeline"],
}
# Variants whose own imports differ from their framework's.
PRELOAD_VARIANT = {"bridge_native": ["keras_bridge"]}


def _workload(kind: str, samples: int):
    """(warm-up data, timed data, batch size, timed training steps) of a workload."""
    n = sizes(samples)[kind]
    if kind == "mlp":
        return make_data(2048, 512), make_data(n, n // 5), 64, -(-n // 64)
    if kind == "cb":
        return make_data(2048, 512), make_data(n, n // 5), 64, 2 * -(-n // 64)
    if kind == "mlp3":
        return make_data(2048, 512), make_data(n // 3, n // 15), 64, 3 * -(-(n // 3) // 64)
    if kind == "conv":
        return make_conv_data(512, 128), make_conv_data(n, n // 5), 128, -(-n // 128)
    if kind == "mio":
        return make_mio_data(256), make_mio_data(n), 32, -(-n // 32)
    return 16, n, 0, n  # pipe: batches


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(variant: str, samples: int, threads: int) -> None:
    spec = VARIANTS[variant]
    import_s = None
    if spec.framework is not None:
        # A fresh interpreter: only the standard-library modules of this script are loaded so far.
        start = time.perf_counter()
        __import__(spec.framework)
        import_s = time.perf_counter() - start

    import contextlib
    import importlib
    import io
    import logging
    import resource
    import warnings

    import torch

    torch.set_num_threads(threads)
    for name in PRELOAD_VARIANT.get(variant, PRELOAD[spec.framework]):
        importlib.import_module(name)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    warm, data, bs, steps = _workload(spec.kind, samples)
    rss_base = _rss_mb()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        RUNNERS[variant](warm, bs)
        start, cpu_start = time.perf_counter(), time.process_time()
        RUNNERS[variant](data, bs)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "variant": variant,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "steps": steps,
                "import_s": import_s,
                "rss_base_mb": rss_base,
                "rss_peak_mb": peak,
                "keras_loaded": "keras" in sys.modules,
            }
        )
    )


# ----------------------------------------------------------------------------- parent
def machine() -> str:
    from importlib.metadata import version

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, " + ", ".join(
        f"{name} {version(name)}" for name in ("torch", "keras", "lightning", "torchmetrics")
    )


def _value(rec: Dict[str, Any], metric: str) -> float:
    if metric == "step":
        return rec["seconds"] / rec["steps"] * 1e3
    if metric == "cpu":
        return rec["cpu_seconds"] / rec["steps"] * 1e3
    if metric == "rss":
        return rec["rss_peak_mb"]
    if metric == "rss_growth":
        return rec["rss_peak_mb"] - rec["rss_base_mb"]
    raise ValueError(metric)


def _fmt(value: float, metric: str, kind: str = "") -> str:
    if metric == "import":
        return f"{value:.2f} s"
    if metric in ("rss", "rss_growth"):
        return f"{value:.0f} MB"
    return f"{value:.3f} ms/{'batch' if kind == 'pipe' else 'step'}"


def _pairs(results: List[List[Dict[str, Any]]], row: Row, metric: str) -> List[tuple]:
    """Per round, (the variant's value, the baseline's value) where both children succeeded."""
    pairs = []
    for rnd in results:
        found = {r["variant"]: r for r in rnd}
        if row.variant in found and row.baseline in found:
            pairs.append((_value(found[row.variant], metric), _value(found[row.baseline], metric)))
    return pairs


def _ratio(pairs: List[tuple], op: Optional[str]) -> float:
    """Median over rounds of the within-round ratio (a speed-up, baseline / variant, for ``>=`` rows)."""
    return statistics.median((q / p if op == ">=" else p / q) for p, q in pairs)


def table(results: List[List[Dict[str, Any]]]) -> str:
    """The README table from ``results[round] = [child records]``."""
    lines = [
        "| # | workload | value | compared against | value | ratio | CPU-time ratio | target | holds |",
        "|---|---|---:|---|---:|---:|---:|---|---|",
    ]
    for row in ROWS:
        cpu = "—"
        if row.metric == "import":
            samples = {
                f: [r["import_s"] for rnd in results for r in rnd if VARIANTS[r["variant"]].framework == f]
                for f in (row.variant, row.baseline)
            }
            if not (samples[row.variant] and samples[row.baseline]):
                continue
            a, b = (statistics.median(samples[f]) for f in (row.variant, row.baseline))
            ratio = a / b
            values = (
                f"{_fmt(a, 'import')} (n={len(samples[row.variant])})",
                f"{_fmt(b, 'import')} (n={len(samples[row.baseline])})",
            )
        else:
            pairs = _pairs(results, row, row.metric)
            if not pairs:
                continue
            ratio = _ratio(pairs, row.op)
            kind = VARIANTS[row.variant].kind
            values = tuple(_fmt(statistics.median(p[i] for p in pairs), row.metric, kind) for i in (0, 1))
            if row.metric == "step" and kind != "pipe":  # the pipeline's work is in its worker processes
                cpu = f"{_ratio(_pairs(results, row, 'cpu'), row.op):.2f}x"
        if row.op is None or row.target is None:
            target, holds = "report", "—"
        else:
            target = f"{row.op} {row.target:.2f}x"
            ok = ratio <= row.target if row.op == "<=" else ratio >= row.target
            miss = ratio / row.target - 1 if row.op == "<=" else 1 - ratio / row.target
            holds = "yes" if ok else f"**no** ({miss:+.0%} {'over' if row.op == '<=' else 'under'})"
        shown = f"{ratio:.2f}x" + (" faster" if row.op == ">=" else "")
        lines.append(
            f"| {row.number} | {row.workload} | {values[0]} | {row.against} | {values[1]} | {shown} | {cpu} | "
            f"{target} | {holds} |"
        )
    return "\n".join(lines)


def variant_table(results: List[List[Dict[str, Any]]]) -> str:
    lines = [
        "| variant | what | runs | time per step | CPU time per step | import s | peak RSS MB | RSS growth MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, spec in VARIANTS.items():
        recs = [r for rnd in results for r in rnd if r["variant"] == name]
        if not recs:
            continue
        imp = [r["import_s"] for r in recs if r["import_s"] is not None]
        lines.append(
            f"| {name} | {spec.what} | {len(recs)} | "
            f"{_fmt(statistics.median(_value(r, 'step') for r in recs), 'step', spec.kind)} | "
            f"{_fmt(statistics.median(_value(r, 'cpu') for r in recs), 'step', spec.kind)} | "
            f"{f'{statistics.median(imp):.2f}' if imp else '—'} | "
            f"{statistics.median(_value(r, 'rss') for r in recs):.0f} | "
            f"{statistics.median(_value(r, 'rss_growth') for r in recs):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, samples / 10")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; the tables show medians (default 3)")
    parser.add_argument("--samples", type=int, help="MLP training samples (default 50000); the rest scale with it")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run only these variants (names in the second table)")
    parser.add_argument("--json", help="also write every child's record to this file")
    args = parser.parse_args()
    samples = args.samples or (5_000 if args.quick else 50_000)
    rounds = args.rounds or (1 if args.quick else 3)
    if args.variant:
        child(args.variant, samples, args.threads)
        return
    unknown = set(args.only or ()) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    names = [n for n, v in VARIANTS.items() if (n in args.only if args.only else v.default)]
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    print(f"{command.strip()}\n{machine()}\nload average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: List[List[Dict[str, Any]]] = []
    started = time.perf_counter()
    for rnd in range(rounds):
        records = []
        for name in names if rnd % 2 == 0 else names[::-1]:
            command = [sys.executable, __file__, "--variant", name, "--samples", str(samples)]
            proc = subprocess.run(
                [*command, "--threads", str(args.threads)],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads)),
            )
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            records.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results.append(records)
        print(f"round {rnd + 1}/{rounds} done, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    n = sizes(samples)
    print(
        f"\nmedians of {rounds} interleaved round(s), {args.threads} torch thread(s) per run, "
        f"{time.perf_counter() - started:.0f} s in all; load average after: {os.getloadavg()[0]:.2f}\n"
        f"MLP {n['mlp']} + {n['mlp'] // 5} samples, batch 64; multi-I/O {n['mio']}, batch 32; callbacks 2 epochs "
        f"x {n['cb']} + {n['cb'] // 5}; conv {n['conv']} + {n['conv'] // 5}, batch 128; PyDataset {n['pipe']} "
        "batches.\n"
    )
    print(table(results))
    print(
        "\nvalue: median over rounds of the timed fit's wall time per training step (validation included). ratio: "
        "median over rounds of the within-round ratio (row 9: Keras's time / the bridge's; row 10: ratio of the "
        "medians of every child's timed import). CPU-time ratio: the same with the child's CPU time "
        "(time.process_time), less sensitive to other load on the cores; holds judges the wall-time ratio.\n"
        "RSS: ru_maxrss of the child (imports, data, a warm-up fit, the timed fit); growth = that peak minus "
        "VmRSS after imports and data. Per-variant medians below (the pipeline's CPU time excludes its workers).\n"
    )
    print(variant_table(results))


if __name__ == "__main__":
    main()
