"""Script for tests/callbacks/test_ddp_callbacks.py: Keras callbacks in a 2-process DDP fit.

Usage: python _ddp_callbacks.py DEVICES
Each process writes what it saw to seen_<rank>.json (the test's own record, not a callback file).
"""

import json
import os
import sys

import keras
import numpy as np
import torch

import keras_bridge as kb


class RankOneStops(keras.callbacks.Callback):
    """Stops on global rank 1 only: the driver must make every process stop."""

    def on_epoch_end(self, epoch, logs=None):
        self.lrs = getattr(self, "lrs", []) + [self.model.optimizer.learning_rate]
        if epoch == 2 and int(os.environ.get("LOCAL_RANK", "0")) == 1:
            self.model.stop_training = True


def fit(module, x, y, devices, epochs, callbacks):
    trainer = {"accelerator": "cpu", "devices": devices}
    if devices > 1:
        trainer["strategy"] = "ddp"
    return module.fit(
        x,
        y,
        batch_size=16,
        epochs=epochs,
        validation_split=0.25,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        trainer=trainer,
    )


def main(devices: int) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int64")
    module = kb.KerasModule(
        torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Softmax(-1))
    )
    module.compile(
        optimizer=kb.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    stopper = RankOneStops()
    callbacks = [
        keras.callbacks.BackupAndRestore("backup", delete_checkpoint=False),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=100, factor=0.5),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint("ckpt/m_{epoch}.keras"),
        keras.callbacks.CSVLogger("log.csv"),
        keras.callbacks.TensorBoard("tb"),
        stopper,
    ]
    history = fit(module, x, y, devices, 6, callbacks)
    resumed = fit(module, x, y, devices, 5, [keras.callbacks.BackupAndRestore("backup")])
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    weights = [p.detach().numpy().tolist() for p in module.model.parameters()]
    with open(f"seen_{rank}.json", "w") as f:
        json.dump(
            {
                "epoch": history.epoch,
                "history": history.history,
                "lrs": stopper.lrs,
                "resumed_epoch": resumed.epoch,
                "weights": weights,
            },
            f,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]))
