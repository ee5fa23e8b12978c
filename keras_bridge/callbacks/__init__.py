"""Keras callbacks on Lightning.

Pass Keras callback objects to ``module.fit(callbacks=[...])``: they are driven with Keras's hooks,
logs and rules by one :class:`KerasCallbackDriver`. For a plain ``lightning.Trainer``, use
:func:`to_lightning`, or :class:`KerasCallbacks` (Keras callback configs as one Lightning callback, e.g.
in a ``LightningCLI`` YAML), with a ``KerasModule`` or any ``LightningModule`` (read through its
:class:`CallbackHost`: a :class:`LoggedMetricsHost` reads what the module logs). Configs
(``{"class_name": ..., "config": {...}}``) and JSON/YAML files of them are accepted wherever callbacks
are (:func:`from_config`, :func:`callbacks_from_file`). The ports below replace Keras callbacks whose
code cannot run here; a Keras ``TensorBoard`` or ``BackupAndRestore`` passed to ``fit`` is translated
to them automatically.

* :class:`ModelCheckpoint`: Keras's, also writing ``.ckpt`` and ``.weights.pt``.
* :class:`TensorBoard`: Keras's layout and tags, written with ``torch.utils.tensorboard``.
* :class:`BackupAndRestore`: Keras's files and rules, with an exact resume of optimizer and loop.
* :class:`ResumableCheckpoint`: a ``BackupAndRestore`` that resumes at the next batch, as if never stopped.

The three classes subclass their Keras counterparts and are built when first used, so importing
``keras_bridge`` does not import keras.
"""

from typing import Any

from keras_bridge.callbacks.convert import callbacks_from_file, from_config
from keras_bridge.callbacks.driver import KerasCallbackDriver
from keras_bridge.callbacks.host import CallbackHost, LoggedMetricsHost, callback_host
from keras_bridge.callbacks.lightning import KerasCallbacks, to_lightning
from keras_bridge.callbacks.model_facade import OptimizerFacade, TorchModelFacade
from keras_bridge.callbacks.ports.registry import ROWS, port_class
from keras_bridge.callbacks.ray import ray_report

__all__ = [
    "BackupAndRestore",
    "CallbackHost",
    "KerasCallbackDriver",
    "KerasCallbacks",
    "LoggedMetricsHost",
    "ModelCheckpoint",
    "OptimizerFacade",
    "ResumableCheckpoint",
    "TensorBoard",
    "TorchModelFacade",
    "callback_host",
    "callbacks_from_file",
    "from_config",
    "ray_report",
    "to_lightning",
]


def __getattr__(name: str) -> Any:
    row = ROWS.get(name)
    if row is not None and row.module is not None:
        return port_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
