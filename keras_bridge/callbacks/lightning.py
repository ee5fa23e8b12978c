"""Keras callbacks for a plain ``lightning.Trainer``: :func:`to_lightning`."""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

import lightning.pytorch as pl

from keras_bridge.callbacks.adapter import KerasCallbackAdapter
from keras_bridge.callbacks.convert import from_config, translate
from keras_bridge.callbacks.progbar import make_progbar_logger
from keras_bridge.utils.keras import import_keras


def to_lightning(callbacks: Any) -> List[pl.Callback]:
    """Lightning callbacks that run Keras callbacks with Keras's hooks, logs and rules.

    Use with a plain ``lightning.Trainer`` and a :class:`~keras_bridge.KerasModule`. The Keras callbacks
    (objects or ``{"class_name", "config"}`` dicts) are driven by one
    :class:`~keras_bridge.callbacks.KerasCallbackAdapter`, followed by a ``History`` (the module's
    ``history`` after fit). Lightning callbacks in the list are returned as they are. No progress bar
    is drawn unless a ``keras.callbacks.ProgbarLogger`` is in the list.

    Args:
        callbacks: a list of Keras callbacks, configs and/or Lightning callbacks (or one of them).

    Returns:
        The Lightning callbacks: the adapter first, then the Lightning callbacks given.

    Raises:
        ValueError: a callback that cannot be translated (the message names it and the argument).

    Example:
        >>> import keras_bridge as kb
        >>> cbs = kb.callbacks.to_lightning([{"class_name": "EarlyStopping", "config": {"patience": 2}}])
        >>> type(cbs[0]).__name__
        'KerasCallbackAdapter'
    """
    keras = import_keras()
    items: Sequence[Any] = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]
    keras_cbs: List[Any] = []
    lightning_cbs: List[pl.Callback] = []
    for item in items:
        if isinstance(item, pl.Callback):
            lightning_cbs.append(item)
        elif isinstance(item, Mapping):
            keras_cbs.append(from_config(item))
        elif isinstance(item, keras.callbacks.Callback):
            keras_cbs.append(translate(item))
        else:
            raise ValueError(
                "Expected each callback to be a keras.callbacks.Callback, a config dict {'class_name': ..., "
                "'config': {...}} or a lightning Callback. "
                f"Received: {item!r} of type {type(item).__name__}"
            )
    history = next((cb for cb in keras_cbs if isinstance(cb, keras.callbacks.History)), None)
    keras_cbs = [cb for cb in keras_cbs if cb is not history]
    want_bar = any(isinstance(cb, keras.callbacks.ProgbarLogger) for cb in keras_cbs)
    keras_cbs = [cb for cb in keras_cbs if not isinstance(cb, keras.callbacks.ProgbarLogger)]
    adapter = KerasCallbackAdapter(
        keras_cbs, history or keras.callbacks.History(), make_progbar_logger() if want_bar else None, mode=None
    )
    return [adapter, *lightning_cbs]
