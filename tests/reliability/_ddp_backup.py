"""Driver for tests/reliability/test_ddp_resume.py: Keras's ``BackupAndRestore`` under DDP, one rank SIGKILLed.

Usage: python _ddp_backup.py OUT_DIR

A user script (``keras.callbacks.BackupAndRestore(backup_dir)``, translated by the bridge; unshuffled arrays; a
2-process fit started as ``srun`` starts it, see ``_ddp_resume.launch``) is run three times with the same code:

* ``killed``: rank 1 SIGKILLs itself in the middle of epoch 3 (rank 0 then fails on its own, or is ended);
* ``resumed``: the same script again: it restores the backup of epoch 2's end and finishes (Keras's rule:
  a backup resumes at the start of the epoch after it);
* ``reference``: the same script in a fresh folder, never interrupted.

Rank 0 of each finishing run writes ``<name>.npz`` (weights, optimizer state) and ``<name>.json`` (History).
The driver prints one JSON line: each run's exit statuses, rank 0 first.
"""

import json
import os
import signal
import sys

import torch

import keras_bridge as kb  # isort: split

import keras
from _ddp_resume import BATCH, DDP, EPOCHS, data, launch, save_results


class KillRank1(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (kb.process_rank(), self.epoch, batch) == (1, 2, 6):
            os.kill(os.getpid(), signal.SIGKILL)


def run(folder, name, devices):
    keras.utils.set_random_seed(0)  # the same script each time
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3), torch.nn.Softmax(-1))
    module = kb.KerasModule(net)
    module.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])  # fmt: skip
    backup = os.path.join(folder, "backup_reference" if name == "reference" else "backup")
    callbacks = [keras.callbacks.BackupAndRestore(backup)] + ([KillRank1()] if name == "killed" else [])
    x, y = data()
    # shuffle=False: Keras's BackupAndRestore restores weights, optimizer and epoch, not torch's global generator,
    # from which Keras (and the bridge, by default) draws each epoch's shuffle; a shuffled epoch after a restore is
    # drawn anew, in Keras as here (kb.callbacks.ResumableCheckpoint keeps the draws: _ddp_resume.py).
    history = module.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.2, verbose=0, shuffle=False,
                         callbacks=callbacks, trainer=DDP)  # fmt: skip
    save_results(folder, name, module, net, history)


def main(folder):
    ends = {name: launch(folder, name, target=run) for name in ("killed", "resumed", "reference")}
    print(json.dumps(ends))


if __name__ == "__main__":
    main(sys.argv[1])
