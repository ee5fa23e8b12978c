"""Which ``compile()`` arguments Keras itself understands, so a Keras model can be compiled with them too.

A Keras model trained on the bridge is also compiled by Keras with the same arguments, so plain Keras
(``model.evaluate``, ``model.fit``, ``model.save``) finds it compiled as the user compiled it. Keras
takes strings, Keras losses and metrics, and plain Python functions ``fn(y_true, y_pred)``; torch
losses and torchmetrics metrics only make sense on the bridge.

Example:
    >>> import torch
    >>> split_keras_arguments({"loss": "mse", "metrics": [torch.nn.L1Loss()]})
    ({'loss': 'mse'}, ['metrics'])
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Mapping, Tuple

import torch

from keras_bridge.utils.keras import import_keras


def is_keras_argument(value: object) -> bool:
    """True when Keras's ``compile`` understands ``value`` (a loss, metric or weight, or a structure of them)."""
    if value is None or isinstance(value, (str, numbers.Number)):
        return True
    if isinstance(value, Mapping):
        return all(is_keras_argument(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_keras_argument(v) for v in value)
    keras = import_keras()
    if isinstance(value, (keras.losses.Loss, keras.metrics.Metric)):
        return True
    if isinstance(value, (torch.nn.Module, type)) or not callable(value):
        return False
    module = getattr(value, "__module__", "") or ""
    return not module.startswith(("torch", "torchmetrics"))


def split_keras_arguments(arguments: Mapping[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """``(what Keras can take, names of the arguments it cannot)``."""
    kept = {name: value for name, value in arguments.items() if is_keras_argument(value)}
    return kept, sorted(name for name in arguments if name not in kept)
