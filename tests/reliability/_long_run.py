"""Script for tests/reliability/test_long_runs.py: many short fits in one process, resources measured.

Usage: python _long_run.py FITS

Prints one JSON line: RSS (MB) after the warm-up fits and at the end, open file descriptors and threads
before the first fit, after the warm-up and at the end.
"""

import gc
import json
import os
import sys
import threading

import keras
import numpy as np
import torch

import keras_bridge as kb  # noqa: I001  (selects keras's torch backend)

WARM_UP = 20


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fds():
    return len(os.listdir("/proc/self/fd"))


def snapshot():
    gc.collect()
    return {"rss_mb": rss_mb(), "fds": fds(), "threads": threading.active_count()}


def main(fits):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, size=64)
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)))
    module.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])  # fmt: skip
    start = snapshot()
    report = {}
    for i in range(fits):
        module.fit(x, y, batch_size=16, epochs=1, validation_split=0.25, verbose=0,
                   callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=3)])  # fmt: skip
        if i + 1 == WARM_UP:
            report["warm"] = snapshot()
    module.evaluate(x, y, verbose=0)
    module.predict(x, verbose=0)
    report.update(start=start, end=snapshot())
    print(json.dumps(report))


if __name__ == "__main__":
    main(int(sys.argv[1]))
