"""Script for tests/reliability/test_long_runs.py: a PyDataset with 4 worker processes, fitted for many epochs.

Usage: python _workers_run.py EPOCHS

Prints one JSON line: the worker processes seen during training, and the child processes of this process
left after a completed fit, after a fit whose PyDataset raises, and after a fit whose callback raises.
"""

import json
import os
import sys

import keras
import numpy as np
import torch

import keras_bridge as kb  # noqa: I001  (selects keras's torch backend)


def children():
    """Live (not zombie) child processes of this process, from /proc."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.append(int(entry))
    return found


class Data(keras.utils.PyDataset):
    def __init__(self, fail_at=None, **kwargs):
        super().__init__(workers=4, use_multiprocessing=True, **kwargs)
        self.fail_at = fail_at
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(64, 8)).astype("float32")
        self.y = rng.integers(0, 3, size=64)

    def __len__(self):
        return 8

    def __getitem__(self, index):
        if self.fail_at is not None and index == self.fail_at:
            raise RuntimeError(f"batch {index} is corrupt")
        return self.x[index * 8 : index * 8 + 8], self.y[index * 8 : index * 8 + 8]


class Watch(keras.callbacks.Callback):
    def __init__(self, fail_at=None):
        super().__init__()
        self.fail_at, self.epoch, self.most = fail_at, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.most = max(self.most, len(children()))
        if (self.epoch, batch) == self.fail_at:
            raise RuntimeError("the callback failed while the workers were busy")


def main(epochs):
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)))
    module.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = {"before": children()}
    watch = Watch()
    history = module.fit(Data(), epochs=epochs, verbose=0, callbacks=[watch])
    report.update(epochs=len(history.epoch), workers_seen=watch.most, after_fit=children())
    try:
        module.fit(Data(fail_at=5), epochs=3, verbose=0)
    except RuntimeError as err:
        report["dataset_error"] = str(err)
    report["after_dataset_error"] = children()
    try:
        module.fit(Data(), epochs=3, verbose=0, callbacks=[Watch(fail_at=(1, 2))])
    except RuntimeError as err:
        report["callback_error"] = str(err)
    report["after_callback_error"] = children()
    print(json.dumps(report))


if __name__ == "__main__":
    main(int(sys.argv[1]))
