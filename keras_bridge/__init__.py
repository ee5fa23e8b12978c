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

from keras_bridge import callbacks, configs, data, optimizers
from keras_bridge._version import __version__
from keras_bridge.data.distributed import is_main_process, process_rank
from keras_bridge.module import KerasModule
from keras_bridge.optimizers import schedules
from keras_bridge.saving.api import load_model
from keras_bridge.trainer.preemption import TrainingPreempted

__all__ = [
    "KerasBackendError",
    "KerasModule",
    "TrainingPreempted",
    "__version__",
    "callbacks",
    "configs",
    "data",
    "is_main_process",
    "load_model",
    "optimizers",
    "process_rank",
    "schedules",
]
