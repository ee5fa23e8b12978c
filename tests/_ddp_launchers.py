"""Script for tests/test_ddp_launchers.py: one digits-MLP fit, launched in different ways.

Usage: python tests/_ddp_launchers.py OUT_DIR MODE

MODE picks only the ``trainer=`` argument (the rest of the script is the same for every launcher):

* ``single``: 1 process;
* ``own_trainer``: a user's own ``lightning.Trainer(strategy="ddp", devices=2, accelerator="cpu")``;
* ``torchrun``: the script started by ``torchrun --nproc_per_node=2`` (Lightning detects torchelastic);
* ``twonode``: started twice by ``torchrun --nnodes=2 --node_rank=0|1 --nproc_per_node=1``; ``num_nodes=2``;
* ``spawn``: ``strategy="ddp_spawn"``: History and weights come back to the launching process;
* ``pydataset1`` / ``pydataset2``: the same data as a ``keras.utils.PyDataset`` on 1 / 2 processes;
* ``fail_rank1``: rank 1's ``__getitem__`` raises; ``kill_rank1``: rank 1 SIGKILLs itself mid-epoch.

The main process (``kb.is_main_process()``) writes ``result.json``: History, weights, and the
``evaluate`` / ``predict`` results after fit; every other process writes ``result_rank<R>.json``.
"""

import json
import os
import signal
import sys

import numpy as np
import torch

import keras_bridge as kb  # isort: split

import keras
import lightning.pytorch as pl

EPOCHS = 3


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype("float32")[:600], d.target.astype("int64")[:600]


class Batches(keras.utils.PyDataset):
    """Whole batches of 64 over the first 480 samples (the training part of validation_split=0.2)."""

    def __init__(self, x, y, fail_rank=None, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.fail_rank = x, y, fail_rank

    def __len__(self):
        return int(np.ceil(len(self.x) / 64))

    def __getitem__(self, i):
        if i == 2 and self.fail_rank is not None and kb.process_rank() == self.fail_rank:
            if self.fail_rank_mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"batch {i} is broken on rank {self.fail_rank}")
        return self.x[i * 64 : (i + 1) * 64], self.y[i * 64 : (i + 1) * 64]


def main(out_dir: str, mode: str) -> None:
    torch.manual_seed(0)
    x, y = digits()
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10), torch.nn.Softmax(-1))
    module = kb.KerasModule(net)
    module.compile(optimizer=kb.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])  # fmt: skip
    os.makedirs(os.path.join(out_dir, "ckpt"), exist_ok=True)
    callbacks = [
        keras.callbacks.ModelCheckpoint(os.path.join(out_dir, "ckpt", "m_{epoch}.weights.h5"), save_weights_only=True),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "log.csv")),
    ]
    trainer = {
        "single": None,
        "own_trainer": pl.Trainer(strategy="ddp", devices=2, accelerator="cpu"),
        "torchrun": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "twonode": {"accelerator": "cpu", "devices": 1, "num_nodes": 2, "strategy": "ddp"},
        "spawn": {"accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn"},
        "pydataset1": None,
        "pydataset2": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "fail_rank1": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
        "kill_rank1": {"accelerator": "cpu", "devices": 2, "strategy": "ddp"},
    }[mode]
    if mode.startswith(("pydataset", "fail", "kill")):
        ds = Batches(x[:480], y[:480], fail_rank=1 if mode.startswith(("fail", "kill")) else None)
        ds.fail_rank_mode = "kill" if mode.startswith("kill") else "raise"
        data = dict(x=ds, validation_data=(x[480:], y[480:]))
    else:
        data = dict(x=x, y=y, batch_size=64, validation_split=0.2)
    history = module.fit(**data, epochs=EPOCHS, shuffle=False, callbacks=callbacks, verbose=2, trainer=trainer)
    # After fit: a fresh Trainer of the same kind runs evaluate / predict on every process
    # (a spawn Trainer would start processes again: this process runs them alone).
    after = trainer if mode not in ("spawn", "own_trainer") else None
    if mode == "own_trainer":
        after = pl.Trainer(strategy="ddp", devices=2, accelerator="cpu")
    evaluation = module.evaluate(x[480:], y[480:], batch_size=64, verbose=0, return_dict=True, trainer=after)
    predictions = module.predict(x[480:], batch_size=64, verbose=0, trainer=after)
    result = {"evaluate": evaluation, "predictions": predictions.tolist()}
    if kb.is_main_process():
        # Code that runs once: a 1-device evaluate on this process alone ignores the other processes.
        alone = module.evaluate(x[480:], y[480:], batch_size=64, verbose=0, return_dict=True)
        result.update(history=history.history, epoch=history.epoch, evaluate_alone=alone,
                      weights=[p.detach().numpy().tolist() for p in net.parameters()])  # fmt: skip
        name = "result.json"
    else:
        name = f"result_rank{kb.process_rank()}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
