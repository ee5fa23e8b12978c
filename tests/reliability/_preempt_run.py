"""Driver for tests/reliability/test_preemption.py: a fit preempted by SIGTERM, then the same code run again.

Usage: python _preempt_run.py OUT_DIR KIND ("torch" | "keras")

Each run is a child forked after the imports (the restart costs milliseconds), calling the same
``run()`` a user script would. Run ``preempted`` sends SIGTERM to its own process from a callback in the
middle of epoch 2, with ``kb.callbacks.ResumableCheckpoint`` and ``keras.callbacks.BackupAndRestore``
(in separate folders) among the callbacks; its exit status and the checkpoint metadata are recorded.
Run ``resumed`` is the same code (another seed: nothing is equal unless restored) and finishes; run
``unbroken`` is never signalled. The driver prints one JSON line: the ends of the three runs.
"""

import json
import os
import signal
import sys

import keras_bridge as kb  # isort: split

import keras
from _forked import fork_run
from _resume_chain import BATCH, EPOCHS, data, make_module, optimizer_state, weights

STOP_AT = (1, 2)  # epoch, batch: SIGTERM arrives in the middle of epoch 2


class Preempt(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == STOP_AT:
            os.kill(os.getpid(), signal.SIGTERM)


def run(folder, kind, name):
    import numpy as np

    keras.utils.set_random_seed(0 if name != "resumed" else 1)
    module = make_module(kind)
    backup = "backup_unbroken" if name == "unbroken" else "backup"
    callbacks = [
        Preempt() if name == "preempted" else keras.callbacks.Callback(),
        kb.callbacks.ResumableCheckpoint(os.path.join(folder, backup), save_freq=3),
        keras.callbacks.BackupAndRestore(os.path.join(folder, backup + "_keras"), save_freq="epoch"),
    ]
    x, y = data()
    history = module.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.25, verbose=0, callbacks=callbacks)
    arrays = {f"w{i}": w for i, w in enumerate(weights(module))}
    arrays.update({f"opt{i}": s for i, s in enumerate(optimizer_state(module))})
    np.savez(os.path.join(folder, f"{name}.npz"), **arrays)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump({"epoch": history.epoch, "history": history.history}, f)


def main(folder, kind):
    ends = {"preempted": fork_run(run, folder, kind, "preempted")}
    metadata = {}
    for name in ("backup", "backup_keras"):
        path = os.path.join(folder, name, "training_metadata.json")
        metadata[name] = json.load(open(path)) if os.path.exists(path) else None
    ends["resumed"] = fork_run(run, folder, kind, "resumed")
    ends["unbroken"] = fork_run(run, folder, kind, "unbroken")
    print(json.dumps({"ends": ends, "metadata": metadata}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
