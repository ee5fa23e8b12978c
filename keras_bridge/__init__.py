"""keras_bridge: Keras-style compile/fit/evaluate/predict running on PyTorch Lightning.

Example:
    >>> import keras_bridge as kb
    >>> import torch
    >>> module = kb.KerasModule(torch.nn.Linear(4, 2))
    >>> module.compile(optimizer="adam", loss="mse")
"""

from keras_bridge.utils.keras import KerasBackendError
from keras_bridge.utils.keras import select_torch_backend as _select_torch_backend

_select_torch_backend()

from keras_bridge import callbacks, data, optimizers  # noqa: E402
from keras_bridge._version import __version__  # noqa: E402
from keras_bridge.optimizers import schedules  # noqa: E402
from keras_bridge.module import KerasModule  # noqa: E402
from keras_bridge.saving.api import load_model  # noqa: E402


__all__ = ["KerasBackendError", "KerasModule", "callbacks", "data", "load_model", "optimizers", "schedules"]
