"""Datasets for the data tests, at module top level so that worker processes can unpickle them.

The tests directory has no ``__init__.py``: ``tests/conftest.py`` puts ``tests/`` on ``sys.path``, so
this module imports as ``_pydatasets`` in the tests (``tests/data`` and ``tests/data/adapters`` alike)
and (via the parent's ``sys.path``) in spawned workers.
"""

import os
import threading
import time

import keras
import numpy as np
import torch
from helpers import load_digits_data

import keras_bridge  # noqa: F401  (selects keras's torch backend)


def digits(n_train=1500):
    """scikit-learn's digits (shipped offline), scaled to [0, 1], split train/validation."""
    x, y = load_digits_data()
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def digits_model():
    """The guide's MLP for 64 input features."""
    inputs = keras.Input(shape=(64,), name="digits")
    x = keras.layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


class ExamplePyDataset(keras.utils.PyDataset):
    """The guide's 3.6 example, verbatim."""

    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x = x
        self.y = y
        self.batch_size = batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / float(self.batch_size)))

    def __getitem__(self, idx):
        batch_x = self.x[idx * self.batch_size : (idx + 1) * self.batch_size]
        batch_y = self.y[idx * self.batch_size : (idx + 1) * self.batch_size]
        return batch_x, batch_y


class ExampleTorchDataset(torch.utils.data.Dataset):
    """The guide's 3.7 example, verbatim."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]


class WeightedPyDataset(keras.utils.PyDataset):
    """Batches ``(x, y, w)`` (or ``(x, y)`` when ``w`` is None) of fixed size."""

    def __init__(self, x, y, w=None, batch_size=16, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.w, self.batch_size = x, y, w, batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, idx):
        s = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
        if self.w is None:
            return self.x[s], self.y[s]
        return self.x[s], self.y[s], self.w[s]


class SampleDataset(torch.utils.data.Dataset):
    """Sample-centric ``(x, y)`` or ``(x, y, w)``."""

    def __init__(self, x, y, w=None):
        self.x, self.y, self.w = x, y, w

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if self.w is None:
            return self.x[i], self.y[i]
        return self.x[i], self.y[i], self.w[i]


class RecordingPyDataset(keras.utils.PyDataset):
    """Each batch reports, from inside whoever computed it: its index, the epoch state, the process and thread.

    ``x[:, 0]`` is the batch index, ``x[:, 1]`` the number of ``on_epoch_end()`` calls the computing copy
    has seen, ``x[:, 2]`` its process id and ``x[:, 3]`` a thread marker (1 off the main thread).
    ``events`` lists the hooks and fetches seen by this (main-process) copy.
    """

    def __init__(self, n_batches=6, batch_size=2, delay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.n_batches, self.batch_size, self.delay = n_batches, batch_size, delay
        self.epoch_ends = 0
        self.events = []

    def __len__(self):
        return self.n_batches

    def __getitem__(self, idx):
        if idx >= self.n_batches:
            raise IndexError(idx)
        self.events.append(("get", idx))
        if self.delay:
            time.sleep(self.delay)
        off_main = threading.current_thread() is not threading.main_thread()
        row = [idx, self.epoch_ends, os.getpid(), float(off_main)]
        x = np.tile(np.array(row, "float64"), (self.batch_size, 1))
        return x, np.full((self.batch_size,), idx % 2, "int64")

    def on_epoch_begin(self):
        self.events.append("begin")

    def on_epoch_end(self):
        self.epoch_ends += 1
        self.events.append("end")


class InfinitePyDataset(keras.utils.PyDataset):
    """An endless PyDataset (``num_batches`` is None); batch ``i`` is filled with ``i``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    @property
    def num_batches(self):
        return None

    def __getitem__(self, idx):
        return np.full((2, 4), idx, "float32"), np.zeros((2,), "int64")


class FailingPyDataset(keras.utils.PyDataset):
    """Raises ``ValueError`` from ``__getitem__(fail_at)``; returns a 4-tuple at ``bad_arity_at``."""

    def __init__(self, n_batches=6, fail_at=None, bad_arity_at=None, **kwargs):
        super().__init__(**kwargs)
        self.n_batches, self.fail_at, self.bad_arity_at = n_batches, fail_at, bad_arity_at

    def __len__(self):
        return self.n_batches

    def __getitem__(self, idx):
        if idx == self.fail_at:
            decode_record(idx)
        x, y = np.zeros((2, 4), "float32"), np.zeros((2,), "int64")
        if idx == self.bad_arity_at:
            return x, y, np.ones(2), np.ones(2)
        return x, y


def decode_record(idx):
    """A named frame that must show up in the traceback the caller gets."""
    raise ValueError(f"corrupt record in batch {idx}")


class CountingPyDataset(keras.utils.PyDataset):
    """Counts fetches in shared memory (visible across forked workers) to check the in-flight bound."""

    def __init__(self, counter, n_batches=40, delay=0.002, **kwargs):
        super().__init__(**kwargs)
        self.counter, self.n_batches, self.delay = counter, n_batches, delay

    def __len__(self):
        return self.n_batches

    def __getitem__(self, idx):
        with self.counter.get_lock():
            self.counter.value += 1
        time.sleep(self.delay)
        return np.full((2, 4), idx, "float32"), np.zeros((2,), "int64")


class BatchLog:
    """A Lightning callback that appends ``epoch rank batch-ids`` lines to a file per process (DDP-safe)."""

    def __new__(cls, folder):
        import lightning.pytorch as pl

        class _BatchLog(pl.Callback):
            def __init__(self, folder):
                self.folder = folder

            def _write(self, trainer, stage, batch):
                ids = [int(v) for v in batch[0][:, 0].tolist()]  # one entry per row
                with open(os.path.join(self.folder, f"{stage}-rank{trainer.global_rank}.txt"), "a") as f:
                    f.write(f"{trainer.current_epoch} {ids}\n")

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                self._write(trainer, "train", batch)

            def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
                if not trainer.sanity_checking:
                    self._write(trainer, "val", batch)

        return _BatchLog(folder)


def softmax_linear(n_in=4, n_out=2):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(n_in, n_out), torch.nn.Softmax(dim=-1))
