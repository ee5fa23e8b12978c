"""Script for tests/data/test_larger_than_memory.py: a fit on a np.memmap three times a memory limit.

Usage: python _memmap_fit.py FOLDER

The process limits its own private memory (``RLIMIT_DATA``: heap and private anonymous mappings, what a
copy of the data would need) to what it uses after its imports plus ``HEADROOM``, and trains on a
read-only ``np.memmap`` of ``3 * HEADROOM`` bytes (shuffled, 20 steps per epoch). The limit is then
lifted, the same data is read into memory and the same fit runs again. Prints one JSON line.
"""

import json
import os
import resource
import sys
import warnings

import numpy as np
import torch

import keras_bridge as kb  # isort: split

import keras

HEADROOM = 200 * 2**20
FEATURES = 64


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def fit(x, y, **options):
    """The fit of both runs; ``options`` are more ``fit`` arguments (``_h5_fit.py``'s)."""
    keras.utils.set_random_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    module = kb.KerasModule(net)
    module.compile(optimizer="adam", loss="mse", metrics=["mae"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = module.fit(x, y, batch_size=1024, epochs=2, steps_per_epoch=20, verbose=0, **options)
    weights = [p.detach().numpy().tolist() for p in net.parameters()]
    return {"history": history.history, "weights": weights, "warnings": [str(w.message) for w in caught]}


def main(folder):
    rows = 3 * HEADROOM // (FEATURES * 4)
    path = os.path.join(folder, "x.f32")
    writer = np.memmap(path, dtype="float32", mode="w+", shape=(rows, FEATURES))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1 << 18):  # written in chunks: the test's own memory stays small too
        stop = min(rows, start + (1 << 18))
        writer[start:stop] = rng.normal(size=(stop - start, FEATURES)).astype("float32")
    writer.flush()
    del writer
    x = np.memmap(path, dtype="float32", mode="r", shape=(rows, FEATURES))
    y = np.asarray(x[:, :1]) * 0 + (np.arange(rows, dtype="float32")[:, None] % 7) / 7  # 9 MB of targets
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = status("VmData") + HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        anon_before = status("RssAnon")
        limited = fit(x, y)
        limited["anon_growth"] = status("RssAnon") - anon_before
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    in_memory = fit(np.array(x), y)
    print(
        json.dumps(
            {"limited": limited, "memory": in_memory, "data_bytes": os.path.getsize(path), "limit_headroom": HEADROOM}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
