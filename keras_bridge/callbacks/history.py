"""The History a ``fit`` returns: Keras's ``keras.callbacks.History``, or, while keras is not loaded, the same
record without importing keras (about 130 MB of resident memory a torch-module fit does not otherwise need).

Example:
    >>> history = History()
    >>> history.on_train_begin()
    >>> history.on_epoch_end(0, {"loss": 0.5})
    >>> history.history, history.epoch
    ({'loss': [0.5]}, [0])
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from keras_bridge.utils.keras import import_keras, keras_loaded

__all__ = ["History", "new_history"]


def _no_op(self: object, *args: object, **kwargs: object) -> None:
    return None


class History:
    """Keras's ``History`` callback: ``history`` maps each log key to its per-epoch values, ``epoch`` lists the
    epochs run, ``params`` holds ``verbose``/``epochs``/``steps``; ``model.history`` is set at each epoch end.

    Its other Keras callback hooks do nothing, as Keras's own do.

    Example:
        >>> history = History()
        >>> history.set_params({"verbose": 0, "epochs": 1, "steps": 2})
        >>> history.params["steps"]
        2
    """

    def __init__(self) -> None:
        self.history: Dict[str, List[Any]] = {}
        self.params: Dict[str, Any] = {}
        self.validation_data = None
        self._model: Any = None

    @property
    def model(self) -> Any:
        return self._model

    def set_model(self, model: object) -> None:
        self._model = model

    def set_params(self, params: Dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self.epoch: List[int] = []

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        if self._model is not None:
            self._model.history = self

    on_batch_begin = on_batch_end = on_epoch_begin = on_train_end = _no_op
    on_train_batch_begin = on_train_batch_end = on_test_begin = on_test_end = _no_op
    on_test_batch_begin = on_test_batch_end = on_predict_begin = on_predict_end = _no_op
    on_predict_batch_begin = on_predict_batch_end = _no_op


def new_history() -> Any:
    """A fresh ``keras.callbacks.History`` once keras is loaded (who imported keras gets Keras's class), else a
    :class:`History`.
    """
    return import_keras().callbacks.History() if keras_loaded() else History()
