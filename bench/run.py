"""Speed of KerasModule.fit against a raw torch loop, plain Lightning and Keras's own fit.

The guide's MLP (784-64-64-10), batch 64, 50k training samples and 10k validation samples, 1 epoch
with validation, RMSprop, sparse categorical crossentropy + accuracy. Each variant runs in its own
child process, does one short warm-up fit, then the timed fit; the variants are interleaved over
several rounds and the table shows each one's median time per training step (validation included)
and its ratio to the raw torch loop.

Run: python bench/run.py [--rounds 3] [--samples 50000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

VARIANTS = [
    ("torch", "raw torch loop (index batching, loss+acc accumulated on device)"),
    ("lightning", "bare LightningModule (no metrics, no logging)"),
    ("lightning_tm", "LightningModule + torchmetrics Accuracy + self.log (typical user code)"),
    ("lightning_tm_bar", "same, with Lightning's default TQDM progress bar"),
    ("keras_fit", "Keras 3 Model.fit, torch backend, verbose=0"),
    ("keras_fit_bar", "Keras 3 Model.fit, torch backend, verbose=1 (progress bar)"),
    ("bridge", "KerasModule(torch MLP).fit, verbose=0"),
    ("bridge_bar", "KerasModule(torch MLP).fit, verbose=1 (Keras progress bar)"),
    ("bridge_keras", "KerasModule(Keras MLP).fit, verbose=0"),
]


def make_data(n: int, n_val: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((n + n_val, 784), dtype=np.float32)
    y = rng.integers(0, 10, n + n_val).astype("int64")
    return x[:n], y[:n], x[n:], y[n:]


def torch_mlp():
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
    )


def keras_mlp():
    import keras
    from keras import layers

    import keras_bridge  # noqa: F401  (torch backend)

    inputs = keras.Input(shape=(784,), name="digits")
    x = layers.Dense(64, activation="relu")(inputs)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(10, name="predictions")(x)
    return keras.Model(inputs, outputs)


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


def _lightning_module(with_metrics: bool):
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    import torchmetrics

    class LitMLP(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = torch_mlp()
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

    return LitMLP()


def run_lightning(data, bs, with_metrics=False, bar=False):
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y, xv, yv = (torch.from_numpy(a) for a in data)
    train = DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=bs)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bar,
        num_sanity_val_steps=0,
    )
    trainer.fit(_lightning_module(with_metrics), train, val)


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


def run_bridge(data, bs, verbose=0, keras_model=False):
    import keras

    import keras_bridge as kb

    x, y, xv, yv = data
    module = kb.KerasModule(keras_mlp() if keras_model else torch_mlp())
    module.compile(
        optimizer="rmsprop", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    module.fit(x, y, batch_size=bs, epochs=1, validation_data=(xv, yv), verbose=verbose, trainer={"accelerator": "cpu"})


RUNNERS = {
    "torch": lambda d, bs: run_torch(d, bs),
    "lightning": lambda d, bs: run_lightning(d, bs),
    "lightning_tm": lambda d, bs: run_lightning(d, bs, with_metrics=True),
    "lightning_tm_bar": lambda d, bs: run_lightning(d, bs, with_metrics=True, bar=True),
    "keras_fit": lambda d, bs: run_keras(d, bs, 0),
    "keras_fit_bar": lambda d, bs: run_keras(d, bs, 1),
    "bridge": lambda d, bs: run_bridge(d, bs, 0),
    "bridge_bar": lambda d, bs: run_bridge(d, bs, 1),
    "bridge_keras": lambda d, bs: run_bridge(d, bs, 0, keras_model=True),
}


def child(variant: str, samples: int, repeats: int, bs: int = 64) -> None:
    import contextlib
    import io
    import logging
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    data = make_data(samples, samples // 5)
    warm = make_data(2048, 512)
    sink = io.StringIO()
    times = []
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        RUNNERS[variant](warm, bs)
        for _ in range(repeats):
            start = time.perf_counter()
            RUNNERS[variant](data, bs)
            times.append(time.perf_counter() - start)
    steps = -(-samples // bs)
    print(json.dumps({"variant": variant, "seconds": min(times), "median": statistics.median(times), "steps": steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run only these variants")
    args = parser.parse_args()
    if args.variant:
        import torch

        torch.set_num_threads(args.threads)
        child(args.variant, args.samples, 1)
        return
    names = [n for n, _ in VARIANTS if not args.only or n in args.only]
    times: dict = {n: [] for n in names}
    steps = -(-args.samples // 64)
    # Rounds interleave the variants so that a slow spell of the machine hits all of them alike.
    for _ in range(args.rounds):
        for name in names:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    name,
                    "--samples",
                    str(args.samples),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(args.threads)),
            )
            if proc.returncode != 0:
                print(f"{name}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            times[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
    medians = {n: statistics.median(t) for n, t in times.items() if t}
    base = medians.get("torch")
    print(
        f"\nMLP 784-64-64-10, batch 64, {args.samples} train + {args.samples // 5} val samples, 1 epoch with "
        f"validation; median of {args.rounds} interleaved rounds; {os.cpu_count()} CPU cores, "
        f"{args.threads} torch thread(s), torch {__import__('torch').__version__}"
    )
    print("| variant | what | ms/step | x raw torch |\n|---|---|---:|---:|")
    for name, what in VARIANTS:
        if name in medians:
            ratio = medians[name] / base if base else float("nan")
            print(f"| {name} | {what} | {medians[name] / steps * 1e3:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
