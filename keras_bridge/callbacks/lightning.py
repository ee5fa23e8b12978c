"""Keras callbacks for a plain ``lightning.Trainer``: :func:`to_lightning` and :class:`KerasCallbacks`."""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence, Tuple

import lightning.pytorch as pl

from keras_bridge.callbacks.convert import callbacks_from_file, from_config, translate
from keras_bridge.callbacks.driver import KerasCallbackDriver
from keras_bridge.callbacks.progbar import make_progbar_logger
from keras_bridge.configs import is_config_file
from keras_bridge.utils.keras import import_keras


def _split(callbacks: object) -> Tuple[List[Any], List[pl.Callback], Any, bool]:
    """``(keras_callbacks, lightning_callbacks, history, wants_progress_bar)`` of a callbacks argument."""
    keras = import_keras()
    if callbacks is None:
        callbacks = []
    if is_config_file(callbacks):
        callbacks = callbacks_from_file(callbacks)
    items: Sequence[Any] = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]
    keras_cbs: List[Any] = []
    lightning_cbs: List[pl.Callback] = []
    for item in items:
        if isinstance(item, pl.Callback):
            lightning_cbs.append(item)
        elif isinstance(item, Mapping):
            keras_cbs.append(from_config(item))
        elif is_config_file(item):
            keras_cbs.extend(callbacks_from_file(item))
        elif isinstance(item, keras.callbacks.Callback):
            keras_cbs.append(translate(item))
        else:
            raise ValueError(
                "Expected each callback to be a keras.callbacks.Callback, a config dict {'class_name': ..., "
                "'config': {...}}, a JSON/YAML file of configs, or a lightning Callback. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    history = next((cb for cb in keras_cbs if isinstance(cb, keras.callbacks.History)), None)
    keras_cbs = [cb for cb in keras_cbs if cb is not history]
    want_bar = any(isinstance(cb, keras.callbacks.ProgbarLogger) for cb in keras_cbs)
    keras_cbs = [cb for cb in keras_cbs if not isinstance(cb, keras.callbacks.ProgbarLogger)]
    return keras_cbs, lightning_cbs, history or keras.callbacks.History(), want_bar


def to_lightning(callbacks: object) -> List[pl.Callback]:
    """Lightning callbacks that run Keras callbacks with Keras's hooks, logs and rules.

    Use with a plain ``lightning.Trainer`` and a :class:`~keras_bridge.KerasModule` or any other
    ``LightningModule``, whose logs are then what it logs with ``self.log`` (Keras's names, ``val_``
    prefix) and whose ``self.model`` view is a :class:`~keras_bridge.callbacks.TorchModelFacade` (see
    :class:`~keras_bridge.callbacks.LoggedMetricsHost`). The Keras callbacks
    (objects, ``{"class_name", "config"}`` dicts, or the path of a JSON/YAML file holding a list of such
    dicts) are driven by one :class:`~keras_bridge.callbacks.KerasCallbackDriver`, followed by a
    ``History`` (the driver's ``history``; a ``KerasModule``'s ``history`` too). Lightning callbacks in
    the list are returned as they are. No progress bar is drawn unless a ``keras.callbacks.ProgbarLogger``
    is in the list.

    Args:
        callbacks: a list of Keras callbacks, configs, config files and/or Lightning callbacks (or one of them).

    Returns:
        The Lightning callbacks: the driver first, then the Lightning callbacks given.

    Raises:
        ValueError: a callback that cannot be translated (the message names it and the argument).

    Example:
        >>> import keras_bridge as kb
        >>> cbs = kb.callbacks.to_lightning([{"class_name": "EarlyStopping", "config": {"patience": 2}}])
        >>> type(cbs[0]).__name__
        'KerasCallbackDriver'
    """
    keras_cbs, lightning_cbs, history, want_bar = _split(callbacks)
    driver = KerasCallbackDriver(keras_cbs, history, make_progbar_logger() if want_bar else None, mode=None)
    return [driver, *lightning_cbs]


class KerasCallbacks(KerasCallbackDriver):
    """Keras callbacks as one Lightning callback, built from their configs: for ``trainer.callbacks`` in YAML.

    What :func:`to_lightning` returns first, with arguments a ``LightningCLI`` config can give::

        trainer:
          callbacks:
            - class_path: keras_bridge.callbacks.KerasCallbacks
              init_args:
                callbacks:
                  - {class_name: EarlyStopping, config: {monitor: val_loss, patience: 2}}
                  - {class_name: CSVLogger, config: {filename: history.csv}}
                progress_bar: true

    This callback's ``history`` is the run's ``History`` after ``trainer.fit`` (a ``KerasModule``'s
    ``history`` too). The module may be any ``LightningModule`` (see :func:`to_lightning`).

    Args:
        callbacks: Keras callback configs (Keras's serialized shape: ``class_name``, ``config``,
            optionally ``module`` and ``registered_name``), Keras callback objects, or the path of a
            JSON/YAML file holding a list of configs. Lightning callbacks are refused: list them beside it.
        progress_bar: draw Keras's progress bar (as ``fit(verbose=1)``).

    Raises:
        ValueError: a bad config (the message names the key and the accepted ones), or a Lightning callback.

    Example:
        >>> cb = KerasCallbacks([{"class_name": "EarlyStopping", "config": {"patience": 2}}])
        >>> [type(c).__name__ for c in cb.all]
        ['EarlyStopping', 'History']
    """

    def __init__(self, callbacks: Any = None, progress_bar: bool = False) -> None:
        keras_cbs, lightning_cbs, history, want_bar = _split(callbacks)
        if lightning_cbs:
            raise ValueError(
                "KerasCallbacks takes Keras callbacks and their configs; list the Lightning callbacks "
                f"{[type(cb).__name__ for cb in lightning_cbs]} in the Trainer's `callbacks` beside it."
            )
        bar = make_progbar_logger() if (progress_bar or want_bar) else None
        super().__init__(keras_cbs, history, bar, mode=None)
