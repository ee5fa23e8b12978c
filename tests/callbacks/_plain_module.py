"""One case run twice, for tests/callbacks/test_plain_module.py and its DDP script: the same Keras callbacks
through ``to_lightning`` in a plain ``lightning.Trainer``, on a user's own ``LightningModule`` and on a
``KerasModule`` wrapping the same network (same initial weights, batches, optimizer and loss).

The learning-rate schedule makes the validation loss rise from epoch 3 on, so that EarlyStopping stops
and restores, ReduceLROnPlateau reduces and ModelCheckpoint keeps the best epoch only.
"""

import csv
import os
from typing import Any, Dict, List, Sequence

import h5py
import keras
import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

import keras_bridge as kb

EPOCHS = 8
LR = 0.05


class Body(nn.Module):
    """The network a KerasModule wraps: the same parameter names as :class:`Net`'s."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 1)

    def forward(self, x):
        return self.dense(x)


class Net(pl.LightningModule):
    """A user's own LightningModule: logs Keras's names, ``loss`` per step and epoch, ``val_loss`` per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.dense(x), y)
        self.log("loss", loss, on_step=True, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.dense(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def schedule(epoch: int, lr: float) -> float:
    """Keep the rate for three epochs, then two far too large (the validation loss rises), then keep it."""
    return 1.2 if epoch in (3, 4) else lr


class Probe(keras.callbacks.Callback):
    """A user's own Keras callback: what it sees through its hooks and ``self.model``."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: List[Any] = []
        self.lrs: List[float] = []
        self.first_batch_logs: List[Dict[str, float]] = []

    def on_train_begin(self, logs=None):
        self.hooks.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.hooks.append(("epoch_begin", epoch))

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            self.first_batch_logs.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.hooks.append(("epoch_end", epoch, sorted(logs)))
        self.lrs.append(float(self.model.optimizer.learning_rate))

    def on_train_end(self, logs=None):
        self.hooks.append(("train_end", bool(self.model.stop_training)))


def data(n: int = 64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32") + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def loaders(batch_size: int = 16):
    x, y = data()
    train = torch.utils.data.TensorDataset(torch.from_numpy(x[:48]), torch.from_numpy(y[:48]))
    val = torch.utils.data.TensorDataset(torch.from_numpy(x[48:]), torch.from_numpy(y[48:]))
    return torch.utils.data.DataLoader(train, batch_size=batch_size), torch.utils.data.DataLoader(val, batch_size=8)


def modules():
    """``{"plain": Net, "keras": KerasModule(Body)}`` with the same initial weights."""
    torch.manual_seed(0)
    plain = Net()
    body = Body()
    body.load_state_dict(plain.state_dict())
    wrapped = kb.KerasModule(body)
    wrapped.compile(optimizer=kb.optimizers.SGD(LR), loss="mse")
    return {"plain": plain, "keras": wrapped}


def callbacks(workdir: str, probe: Probe) -> List[Any]:
    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=0),
        keras.callbacks.CSVLogger(os.path.join(workdir, "log.csv")),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, "best_{epoch}.weights.h5"), save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.LearningRateScheduler(schedule),
        probe,
    ]


def weights_of(module) -> List[np.ndarray]:
    network = module.model if isinstance(module, kb.KerasModule) else module
    return [t.detach().cpu().numpy().copy() for t in network.state_dict().values()]


def read_h5(path: str) -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: out.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return out


def quiet_trainer(callbacks: Sequence[Any], **kwargs: Any) -> pl.Trainer:
    """A plain Trainer (``EPOCHS`` epochs unless told) that writes no file of its own and prints nothing."""
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(callbacks=list(callbacks), **{"max_epochs": EPOCHS, "num_sanity_val_steps": 0, **quiet, **kwargs})


def run(kind: str, workdir: str, extra: Sequence[Any] = (), **trainer_kwargs: Any) -> Dict[str, Any]:
    """Fit ``kind`` ("plain" or "keras") with the callbacks (and ``extra`` ones); what a test compares."""
    os.makedirs(workdir, exist_ok=True)
    module = modules()[kind]
    probe = Probe()
    cbs = kb.callbacks.to_lightning(callbacks(workdir, probe) + list(extra))
    trainer = quiet_trainer(cbs, **trainer_kwargs)
    train, val = loaders()
    trainer.fit(module, train, val)
    with open(os.path.join(workdir, "log.csv")) as f:
        rows = list(csv.reader(f))
    files = sorted(n for n in os.listdir(workdir) if n.endswith(".weights.h5"))
    return {
        "history": cbs[0].history.history,
        "epochs_run": trainer.current_epoch,
        "probe": {"hooks": probe.hooks, "lrs": probe.lrs, "first_batch_logs": probe.first_batch_logs},
        "stopped_epoch": cbs[0].user_callbacks[0].stopped_epoch,
        "best_epoch": cbs[0].user_callbacks[0].best_epoch,
        "weights": [w.tolist() for w in weights_of(module)],
        "csv": rows,
        "files": {name: {k: v.tolist() for k, v in read_h5(os.path.join(workdir, name)).items()} for name in files},
    }


class Data(pl.LightningDataModule):
    """The same batches as :func:`loaders`, for a ``LightningCLI`` run."""

    def train_dataloader(self):
        return loaders()[0]

    def val_dataloader(self):
        return loaders()[1]
