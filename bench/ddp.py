"""Samples/s of ``KerasModule.fit`` on 1 vs 2 CPU processes (Lightning ``ddp``, gloo), MLP and a small conv model.

Usage: python bench/ddp.py [--samples 8192] [--epochs 2]

Each measurement is a fresh ``python bench/ddp.py --child MODEL DEVICES`` process; the time counted is the
training epochs after the first (process start, DDP set-up and the first epoch excluded). On a 2-core machine the
gain of a second process is capped by the cores (and by torch's own intra-op threads, set to 1 here).

Measured 2026-12-02 (2 shared CPU cores, gloo, 8192 samples, batch 64, epochs 2-3 timed):

| model | 1 process (samples/s) | 2 processes (samples/s) | x |
|---|---:|---:|---:|
| mlp | 52621 | 8941 | 0.17 |
| conv | 3405 | 3107 | 0.91 |

On 2 cores a second process does not pay: the MLP's steps are shorter than gloo's per-step gradient
all-reduce, and the conv model's compute already uses both cores' worth of time slices.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(model_name: str, devices: int, samples: int, epochs: int) -> None:
    import numpy as np
    import torch

    import keras_bridge as kb  # isort: split
    import keras

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if model_name == "mlp":
        x = rng.random((samples, 784), dtype=np.float32)
        net = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                  torch.nn.ReLU(), torch.nn.Linear(64, 10))  # fmt: skip
    else:
        x = rng.random((samples, 1, 28, 28), dtype=np.float32)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(32 * 5 * 5, 10))  # fmt: skip
    y = rng.integers(0, 10, samples)
    module = kb.KerasModule(net)
    module.compile(optimizer="rmsprop", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])  # fmt: skip
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    trainer = {"accelerator": "cpu", "devices": devices}
    if devices > 1:
        trainer["strategy"] = "ddp"
    module.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[Timer()], trainer=trainer)
    if kb.is_main_process():
        print(json.dumps({"samples_per_s": samples * (epochs - 1) / sum(times[1:])}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.samples, args.epochs)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    print("| model | 1 process (samples/s) | 2 processes (samples/s) | x |\n|---|---:|---:|---:|")
    for model_name in ("mlp", "conv"):
        rates = []
        for devices in (1, 2):
            cmd = [sys.executable, __file__, "--child", model_name, str(devices), "--samples", str(args.samples),
                   "--epochs", str(args.epochs)]  # fmt: skip
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rates.append(json.loads(out.strip().splitlines()[-1])["samples_per_s"])
        print(f"| {model_name} | {rates[0]:.0f} | {rates[1]:.0f} | {rates[1] / rates[0]:.2f} |")


if __name__ == "__main__":
    main()
