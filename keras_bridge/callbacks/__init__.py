"""Keras callbacks on Lightning.

Pass Keras callback objects to ``module.fit(callbacks=[...])``: they are driven with Keras's hooks,
logs and rules by one :class:`KerasCallbackAdapter`. For a plain ``lightning.Trainer``, use
:func:`to_lightning`. The ports below replace Keras callbacks whose code cannot run here; a Keras
``TensorBoard`` or ``BackupAndRestore`` passed to ``fit`` is translated to them automatically.

* :class:`ModelCheckpoint`: Keras's, also writing ``.ckpt`` and ``.weights.pt``.
* :class:`TensorBoard`: Keras's layout and tags, written with ``torch.utils.tensorboard``.
* :class:`BackupAndRestore`: Keras's files and rules, with an exact resume of optimizer and loop.

The three classes subclass their Keras counterparts and are built when first used, so importing
``keras_bridge`` does not import keras.
"""

from typing import Any

from keras_bridge.callbacks.adapter import KerasCallbackAdapter
from keras_bridge.callbacks.convert import from_config
from keras_bridge.callbacks.lightning import to_lightning
from keras_bridge.callbacks.model_facade import OptimizerFacade, TorchModelFacade

__all__ = [
    "BackupAndRestore",
    "KerasCallbackAdapter",
    "ModelCheckpoint",
    "OptimizerFacade",
    "TensorBoard",
    "TorchModelFacade",
    "from_config",
    "to_lightning",
]

_PORTS = {"BackupAndRestore": "backup", "ModelCheckpoint": "checkpoint", "TensorBoard": "tensorboard"}


def __getattr__(name: str) -> Any:
    if name in _PORTS:
        import importlib

        return getattr(importlib.import_module(f"keras_bridge.callbacks.ports.{_PORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
