"""The per-batch hooks Lightning may skip (left as no-ops) are skipped; every overridden one still runs."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch

import keras_bridge as kb


class CountingModule(kb.KerasModule):
    def __init__(self, model):
        super().__init__(model)
        self.calls = {"on_train_batch_start": 0, "on_before_backward": 0, "on_before_optimizer_step": 0}

    def on_train_batch_start(self, batch, batch_idx):
        self.calls["on_train_batch_start"] += 1

    def on_before_backward(self, loss):
        self.calls["on_before_backward"] += 1

    def on_before_optimizer_step(self, optimizer):
        self.calls["on_before_optimizer_step"] += 1


class CountingCallback(pl.Callback):
    def __init__(self):
        self.zero_grads = self.validation_batches = 0

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        self.zero_grads += 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.validation_batches += 1


def test_overridden_batch_hooks_run_at_every_batch_and_the_no_ops_are_skipped():
    module = CountingModule(torch.nn.Linear(3, 1))
    module.compile(optimizer="sgd", loss="mse")
    assert module.on_after_backward is None and module.on_before_zero_grad is None  # inherited no-ops
    callback = CountingCallback()
    x, y = np.ones((40, 3), "float32"), np.zeros((40, 1), "float32")
    history = module.fit(
        x, y, batch_size=8, epochs=2, validation_split=0.2, verbose=0, trainer={"callbacks": [callback]}
    )
    steps = 2 * 4  # 32 training samples per epoch, batch 8
    assert module.calls == dict.fromkeys(module.calls, steps)
    assert callback.zero_grads == steps and callback.validation_batches == 2
    assert len(history.history["val_loss"]) == 2
