"""Script for tests/data/test_larger_than_memory.py: a fit on an HDF5 dataset three times a memory limit.

Usage: python _h5_fit.py FOLDER

As ``_memmap_fit.py``, with ``x`` an ``h5py.Dataset`` and ``shuffle="batch"`` (Keras's advice for HDF5 data):
the process limits its private memory (``RLIMIT_DATA``) to what it uses after its imports plus ``HEADROOM``
and trains on ``3 * HEADROOM`` bytes of rows in the file, with a validation split taken from the same file.
The limit is then lifted, the data is read into memory and the same fit runs again. Prints one JSON line.
"""

import json
import os
import resource
import sys

import h5py
import numpy as np

# The memmap script's fit, limit and sizes; it imports keras (before the limit: the growth measured is the fit's).
from _memmap_fit import FEATURES, HEADROOM, fit, status


def main(folder):
    rows = 3 * HEADROOM // (FEATURES * 4)
    path = os.path.join(folder, "x.h5")
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("x", shape=(rows, FEATURES), dtype="float32")
        for start in range(0, rows, 1 << 18):  # written in chunks: the test's own memory stays small too
            stop = min(rows, start + (1 << 18))
            data[start:stop] = rng.normal(size=(stop - start, FEATURES)).astype("float32")
    y = (np.arange(rows, dtype="float32")[:, None] % 7) / 7  # 9 MB of targets
    with h5py.File(path, "r") as f:
        x = f["x"]
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = status("VmData") + HEADROOM
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        try:
            anon_before = status("RssAnon")
            limited = fit(x, y, shuffle="batch", validation_split=0.001)
            limited["anon_growth"] = status("RssAnon") - anon_before
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
        in_memory = fit(x[:], y, shuffle="batch", validation_split=0.001)
    print(
        json.dumps(
            {"limited": limited, "memory": in_memory, "data_bytes": rows * FEATURES * 4, "limit_headroom": HEADROOM}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
