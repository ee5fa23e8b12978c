"""The one place a ``lightning.Trainer`` is made or borrowed for ``fit``, ``evaluate`` and ``predict``.

Keras arguments own some Trainer options (``epochs`` is ``max_epochs``, ``steps_per_epoch`` is
``limit_train_batches``, ``validation_freq`` is ``check_val_every_n_epoch``, ``steps`` limits the
evaluation or prediction batches). :class:`TrainerConnector` applies them for one call:

* ``trainer=None`` or a dict: a new Trainer with the bridge's quiet defaults (no logger, no
  checkpointing, no Lightning progress bar or summary), the dict's options on top. A dict option
  that contradicts a Keras argument is an error naming both.
* a ready ``lightning.Trainer``: borrowed. Every Keras-owned option is set for the call (those no
  Keras argument gives take Keras's meaning: all batches), the bridge's callbacks are attached, and
  the Trainer is given back as it was, whatever happens during the call.

The data loaders shard themselves (``batch_size`` is the global batch), so Lightning's
``use_distributed_sampler`` is off for the call in both cases.

Example:
    >>> import lightning.pytorch as pl
    >>> trainer = pl.Trainer(max_epochs=7, logger=False, enable_checkpointing=False,
    ...                      enable_progress_bar=False, enable_model_summary=False)
    >>> with TrainerConnector(trainer, [], {"max_epochs": 2}) as run:
    ...     run.max_epochs
    2
    >>> trainer.max_epochs
    7
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from types import TracebackType
from typing import Any, Dict, Iterator, Optional, Sequence, Type

import lightning.pytorch as pl

from keras_bridge.utils.compat import get_use_distributed_sampler, set_use_distributed_sampler

#: Trainer options that a Keras argument decides, and that argument's name.
KERAS_OWNED = {
    "max_epochs": "epochs",
    "limit_train_batches": "steps_per_epoch",
    "check_val_every_n_epoch": "validation_freq",
    "limit_val_batches": "steps",
    "limit_predict_batches": "steps",
}
# What the batch limits mean in Keras when no argument sets them: every batch.
_KERAS_DEFAULTS: Dict[str, Any] = {"limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_predict_batches": 1.0}
_QUIET_DEFAULTS: Dict[str, Any] = dict(
    accelerator="auto",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_model_summary=False,
    enable_progress_bar=False,
    num_sanity_val_steps=0,
)
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Messages meant for Lightning users, about choices the bridge made on the user's behalf.
_LIGHTNING_USER_WARNINGS = (
    ".*does not have many workers.*",
    ".*sync_dist=True.*",
    ".*GPU available but not used.*",
    ".*is smaller than the logging interval.*",
    ".*Total length of .* across ranks is zero.*",
    ".*You defined a `validation_step` but have no `val_dataloader`.*",
    ".*Consider setting `persistent_workers=True`.*",
    ".*`training_step` returned `None`.*",
    ".*Your `IterableDataset` has `__len__` defined.*",
    ".*isinstance\\(treespec, LeafSpec\\).*",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's banners, tips and Lightning-user warnings (set KERAS_BRIDGE_LIGHTNING_LOGS=1 to see them)."""
    if os.environ.get("KERAS_BRIDGE_LIGHTNING_LOGS"):
        yield
        return
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        for pattern in _LIGHTNING_USER_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _read_option(trainer: pl.Trainer, name: str) -> Any:
    return trainer.fit_loop.max_epochs if name == "max_epochs" else getattr(trainer, name)


def _write_option(trainer: pl.Trainer, name: str, value: Any) -> None:
    if name == "max_epochs":
        trainer.fit_loop.max_epochs = value
    else:
        setattr(trainer, name, value)


class TrainerConnector:
    """A context manager giving the Trainer for one ``fit``/``evaluate``/``predict`` call.

    Args:
        trainer: ``None``, a dict of ``lightning.Trainer`` options, or a ready ``lightning.Trainer``.
        callbacks: Lightning callbacks to run during the call (the bridge's adapter first).
        owned: the Keras-owned options for this call (keys of :data:`KERAS_OWNED`); absent keys keep
            the Trainer's (or Lightning's) own value.

    Raises:
        TypeError: ``trainer`` is of another type.
        ValueError: a ``trainer`` dict option contradicts a Keras argument.
    """

    def __init__(self, trainer: Any, callbacks: Sequence[pl.Callback], owned: Dict[str, Any]) -> None:
        unknown = [k for k in owned if k not in KERAS_OWNED]
        if unknown:
            raise ValueError(f"Not Keras-owned Trainer options: {unknown}. Expected keys of {sorted(KERAS_OWNED)}.")
        if trainer is not None and not isinstance(trainer, (dict, pl.Trainer)):
            raise TypeError(
                "Expected `trainer` to be a dict of lightning.Trainer options or a lightning.Trainer. "
                f"Received: trainer of type {type(trainer).__name__}"
            )
        if isinstance(trainer, dict):
            _check_conflicts(trainer, owned)
        self._given = trainer
        self._callbacks = list(callbacks)
        self._owned = dict(owned)
        self._saved: Dict[str, Any] = {}
        self._trainer: Optional[pl.Trainer] = None

    @property
    def borrowed(self) -> bool:
        """True when the user passed a ready Trainer (it is restored after the call)."""
        return isinstance(self._given, pl.Trainer)

    def __enter__(self) -> pl.Trainer:
        if isinstance(self._given, pl.Trainer):
            self._trainer = self._borrow(self._given)
        else:
            self._trainer = self._make(self._given or {})
        return self._trainer

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        trainer = self._trainer
        if trainer is None:
            return
        for cb in self._callbacks:
            if cb in trainer.callbacks:  # type: ignore[attr-defined]
                trainer.callbacks.remove(cb)  # type: ignore[attr-defined]
        if self.borrowed:
            for name, value in self._saved.items():
                if name == "use_distributed_sampler":
                    set_use_distributed_sampler(trainer, value)
                elif name == "should_stop":
                    trainer.should_stop = value
                else:
                    _write_option(trainer, name, value)

    def _make(self, options: Dict[str, Any]) -> pl.Trainer:
        kwargs = dict(_QUIET_DEFAULTS)
        kwargs.update(self._owned)
        user = dict(options)
        user_callbacks = user.pop("callbacks", None) or []
        if not isinstance(user_callbacks, (list, tuple)):
            user_callbacks = [user_callbacks]
        kwargs.update(user)
        kwargs["use_distributed_sampler"] = False
        kwargs["callbacks"] = self._callbacks + list(user_callbacks)
        with quiet_lightning():
            return pl.Trainer(**kwargs)

    def _borrow(self, trainer: pl.Trainer) -> pl.Trainer:
        for name, value in {**_KERAS_DEFAULTS, **self._owned}.items():
            self._saved[name] = _read_option(trainer, name)
            _write_option(trainer, name, value)
        self._saved["use_distributed_sampler"] = get_use_distributed_sampler(trainer)
        set_use_distributed_sampler(trainer, False)
        # A previous run's early stop must not end this call before it starts.
        self._saved["should_stop"] = trainer.should_stop
        trainer.should_stop = False
        trainer.callbacks[0:0] = self._callbacks  # type: ignore[attr-defined]
        return trainer


def _check_conflicts(options: Dict[str, Any], owned: Dict[str, Any]) -> None:
    for key, keras_arg in KERAS_OWNED.items():
        if key in options and key in owned and options[key] != owned[key]:
            raise ValueError(
                f"The `trainer` option {key}={options[key]!r} conflicts with the Keras argument "
                f"`{keras_arg}` (which sets {key}={owned[key]!r}). Set `{keras_arg}` instead."
            )
