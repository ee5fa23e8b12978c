"""One Lightning callback that drives Keras callbacks with Keras's hook order and logs.

Keras's ``CallbackList`` order is kept: the user's callbacks, then ``History``, then the progress
bar, all receiving the same ``logs`` dict (so a callback that adds ``learning_rate`` to the epoch logs
is seen by History and the bar). Lightning's sanity check never reaches Keras callbacks.
Batch-end logs are computed only when some callback will read them.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback as LightningCallback

from keras_bridge._keras import import_keras

_BATCH_END_HOOKS = ("on_batch_end", "on_train_batch_end")
_TEST_BATCH_END_HOOKS = ("on_test_batch_end",)


def _overrides(cb: Any, names: Sequence[str]) -> bool:
    base = import_keras().callbacks.Callback
    return any(getattr(type(cb), n, None) is not getattr(base, n) for n in names)


class _LazyLogs:
    """Compute a logs dict at most once, on first use."""

    def __init__(self, fn: Callable[[], Dict[str, float]]) -> None:
        self._fn = fn
        self._value: Optional[Dict[str, float]] = None

    def __call__(self) -> Dict[str, float]:
        if self._value is None:
            self._value = self._fn()
        return self._value


class KerasCallbackAdapter(LightningCallback):
    """Run Keras callbacks (``keras.callbacks.Callback`` objects) inside a Lightning run.

    Args:
        callbacks: the user's Keras callbacks, in order.
        history: the History callback appended after them (or None).
        progbar: the progress-bar logger appended last (or None; rank 0 only).
        params: Keras ``params`` (``verbose``, ``epochs``, ``steps``).
        model: what ``callback.model`` should be (the Keras model, or a facade for torch modules).
        mode: ``"fit"``, ``"evaluate"`` or ``"predict"``.
        validation_freq: Keras's ``validation_freq`` (int or list of 1-based epochs).
    """

    def __init__(
        self,
        callbacks: Sequence[Any],
        history: Any,
        progbar: Any,
        params: Dict[str, Any],
        model: Any,
        mode: str = "fit",
        validation_freq: Any = 1,
    ) -> None:
        self.user_callbacks = list(callbacks)
        self.history = history
        self.progbar = progbar
        self.params = params
        self.model = model
        self.mode = mode
        self.validation_freq = validation_freq
        self.all: List[Any] = self.user_callbacks + [c for c in (history, progbar) if c is not None]
        self._batch_readers = [c for c in self.user_callbacks if _overrides(c, _BATCH_END_HOOKS)]
        self._test_batch_readers = [c for c in self.user_callbacks if _overrides(c, _TEST_BATCH_END_HOOKS)]
        self._batch_begin = [
            c for c in self.user_callbacks if _overrides(c, ("on_batch_begin", "on_train_batch_begin"))
        ]
        self.last_logs: Dict[str, float] = {}
        for cb in self.all:
            cb.set_model(model)
            cb.set_params(dict(params))

    @property
    def state_key(self) -> str:
        return "KerasCallbackAdapter"

    # ---------------------------------------------------------------- helpers
    def _module(self, pl_module: pl.LightningModule) -> Any:
        return pl_module

    def _sync_stop(self, trainer: pl.Trainer) -> None:
        flag = bool(getattr(self.model, "stop_training", False))
        # every process must take the same decision, or the others wait forever
        flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if flag:
            self.model.stop_training = True
            trainer.should_stop = True

    # ---------------------------------------------------------------- fit
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.model.stop_training = False
        for cb in self.all:
            cb.on_train_begin({})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        freq = self.validation_freq
        if isinstance(freq, (list, tuple, set)):
            trainer.check_val_every_n_epoch = 1 if (epoch + 1) in freq else 10**9
        for cb in self.all:
            cb.on_epoch_begin(epoch, {})

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        for cb in self._batch_begin:
            cb.on_train_batch_begin(batch_idx, {})

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        logs = _LazyLogs(lambda: pl_module.batch_logs(training=True))
        if self._batch_readers:
            for cb in self._batch_readers:
                cb.on_train_batch_end(batch_idx, logs())
            self._sync_stop(trainer)
        if self.progbar is not None:
            self.progbar.update_lazily(batch_idx, logs)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for cb in self._test_callbacks():
            cb.on_test_begin({})

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:
            return
        for cb in self._test_callbacks():
            cb.on_test_batch_begin(batch_idx, {})

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:
            return
        logs = _LazyLogs(lambda: pl_module.batch_logs(training=False))
        for cb in self._test_batch_readers:
            cb.on_test_batch_end(batch_idx, logs())
        if self.mode == "evaluate" and self.progbar is not None:
            self.progbar.update_lazily(batch_idx, logs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logs = dict(pl_module.finish_eval_epoch())
        self.last_logs = logs
        for cb in self._test_callbacks():
            cb.on_test_end(logs)

    on_test_start = on_validation_start
    on_test_batch_start = on_validation_batch_start
    on_test_batch_end = on_validation_batch_end
    on_test_end = on_validation_end

    def _test_callbacks(self) -> List[Any]:
        # Inside fit, Keras's bar stays silent during validation.
        return self.all if self.mode == "evaluate" else self.user_callbacks

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        logs = pl_module.finish_train_epoch()
        for cb in self.all:
            cb.on_epoch_end(epoch, logs)
        self.last_logs = logs
        self._sync_stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for cb in self.all:
            cb.on_train_end(dict(self.last_logs))

    # ---------------------------------------------------------------- predict
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for cb in self.all:
            cb.on_predict_begin({})

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for cb in self.user_callbacks:
            cb.on_predict_batch_begin(batch_idx, {})

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for cb in self.user_callbacks:
            cb.on_predict_batch_end(batch_idx, {"outputs": outputs})
        if self.progbar is not None:
            self.progbar.update_lazily(batch_idx, None)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for cb in self.all:
            cb.on_predict_end({})
