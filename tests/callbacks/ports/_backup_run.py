"""Script for tests/callbacks/ports/test_backup.py: a fit with BackupAndRestore, optionally SIGKILLed after epoch 3.

Usage: python _backup_run.py BACKUP_DIR OUT_NPZ KILL(0|1)
"""

import os
import signal
import sys

import keras
import numpy as np
import torch

import keras_bridge as kb


class KillAfterEpoch3(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)


def main(backup_dir: str, out: str, kill: bool) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (x.sum(1, keepdims=True) ** 2 / 5).astype("float32")
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)))
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.9)
    module.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse")
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir)] + ([KillAfterEpoch3()] if kill else [])
    history = module.fit(x, y, batch_size=16, epochs=6, shuffle=False, verbose=0, callbacks=callbacks)
    weights = [p.detach().numpy() for p in module.model.parameters()]
    np.savez(out, *weights, epoch=np.array(history.epoch))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] == "1")
