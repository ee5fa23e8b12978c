"""Keras callbacks (objects or configs) to what runs on Lightning.

:func:`translate` decides, for one Keras callback, what the driver drives: the object itself
(EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, LearningRateScheduler, CSVLogger, TerminateOnNaN,
LambdaCallback, History, RemoteMonitor, user subclasses), or a port configured like it where Keras's
code cannot run here (``TensorBoard`` needs TensorFlow; ``BackupAndRestore`` must restore the torch
optimizer and the Lightning loop). :func:`from_config` builds a callback from
``{"class_name": ..., "config": {...}}`` (Keras's serialized shape, ``module`` and ``registered_name``
included), :func:`callbacks_from_file` a list of them from a JSON or YAML file.
Anything that cannot be translated is a ``ValueError`` naming the callback and the argument.
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any, List, Mapping, Optional

from keras_bridge.callbacks.ports.registry import PORTS, TRANSLATED, port_class, port_module
from keras_bridge.configs import check_config_keys, constructor_arguments, find_class, read_config_file
from keras_bridge.typing import PathLike
from keras_bridge.utils.errors import did_you_mean
from keras_bridge.utils.keras import import_keras, is_keras_object

if TYPE_CHECKING:
    import keras

# Keras callbacks whose code needs something this install cannot give them.
_UNSUPPORTED = {
    "SwapEMAWeights": "it swaps Keras optimizer EMA variables; use a keras_bridge optimizer with use_ema=True",
    "OrbaxCheckpoint": "it writes Orbax (JAX) checkpoints; use ModelCheckpoint",
}


def runs_keras_callbacks(model: keras.Model) -> bool:
    """True for a Keras model compiled with a Keras optimizer: Keras's own BackupAndRestore then works as is."""
    optimizer = getattr(model, "optimizer", None)
    return is_keras_object(model, "Model") and is_keras_object(optimizer, "optimizers.Optimizer")


def translate(callback: keras.callbacks.Callback, native: bool = False) -> Any:
    """The callback the driver drives in place of ``callback`` (often ``callback`` itself).

    Args:
        callback: the user's Keras callback.
        native: the model is a Keras model with its Keras optimizer on one process (see
            :func:`runs_keras_callbacks`): Keras's ``BackupAndRestore`` then runs itself.

    Raises:
        ValueError: a callback (or an argument of it) that cannot run on the bridge.
    """
    keras = import_keras()
    name = type(callback).__name__
    for unsupported, why in _UNSUPPORTED.items():
        base = getattr(keras.callbacks, unsupported, None)
        if base is not None and isinstance(callback, base):
            raise ValueError(f"{name}: this callback cannot be translated to Lightning ({why}).")
    for row in TRANSLATED:
        port_name = row.name
        if native and port_name == "BackupAndRestore" and type(callback) is keras.callbacks.BackupAndRestore:
            continue
        port, original = port_class(port_name), getattr(keras.callbacks, str(row.keras_class))
        if isinstance(callback, port):
            return callback
        if type(callback) is original:
            return port_module(port_name).from_keras(callback)
        if isinstance(callback, original):
            raise ValueError(
                f"{name}: a subclass of keras.callbacks.{port_name} runs Keras's code, which cannot work here "
                f"(argument `callbacks`). Subclass keras_bridge.callbacks.{port_name} instead."
            )
    return callback


def _callback_class(config: Mapping[str, Any], custom_objects: Optional[Mapping[str, Any]]) -> type:
    keras = import_keras()
    class_name = config["class_name"]
    bridge = {row.name: port_class(row.name) for row in PORTS}
    try:
        cls = find_class(config, "callbacks", "callbacks", custom_objects, extra=bridge)
    except ValueError:
        cls = None
    if isinstance(cls, type) and issubclass(cls, keras.callbacks.Callback) and class_name != "CallbackList":
        return cls
    known = sorted(n for n in dir(keras.callbacks) if not n.startswith("_") and n not in ("Callback", "CallbackList"))
    raise ValueError(
        f"Unknown callback class_name={class_name!r}.{did_you_mean(class_name, known)} Expected one of: "
        f"{', '.join(known)}, or a keras.callbacks.Callback subclass registered with "
        "`keras.saving.register_keras_serializable` (give its registered_name 'package>Name')."
    )


def from_config(config: Mapping[str, Any], custom_objects: Optional[Mapping[str, Any]] = None) -> Any:
    """Build a callback from its config, e.g. read from a YAML or JSON file.

    The config has the shape of ``keras.saving.serialize_keras_object``'s output: ``class_name``
    (required), ``config`` (the constructor arguments), and optionally ``module`` and
    ``registered_name``. Keras's built-in callbacks are found by name; a user's callback class by
    ``custom_objects`` or through ``keras.saving.register_keras_serializable`` (``registered_name``
    ``"package>Name"``), as Keras finds a serialized object.

    Raises:
        ValueError: an unknown key or class, an argument the class does not take or lacks, or a value it
            rejects (the message names the key, the argument and the accepted ones).

    Example:
        >>> cb = from_config({"class_name": "EarlyStopping", "config": {"patience": 2}})
        >>> type(cb).__name__, cb.patience
        ('EarlyStopping', 2)
    """
    if not isinstance(config, Mapping) or "class_name" not in config:
        raise ValueError(
            f"Expected a callback config of the form {{'class_name': ..., 'config': {{...}}}}. Received: {config!r}"
        )
    check_config_keys(config, "callbacks")
    class_name = config["class_name"]
    cls = _callback_class(config, custom_objects)
    kwargs = dict(config.get("config") or {})
    signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    names, open_ended = constructor_arguments(cls)
    unknown = [k for k in kwargs if k not in names]
    if unknown and not open_ended and not issubclass(cls, import_keras().callbacks.LambdaCallback):
        hint = did_you_mean(unknown[0], names)
        raise ValueError(
            f"{class_name}: unknown argument(s) {', '.join(repr(k) for k in unknown)}.{hint} "
            f"{class_name} takes: {', '.join(names)}."
        )
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.default is p.empty
        and p.name not in kwargs
    ]
    if missing:
        raise ValueError(f"{class_name}: missing required argument(s) {', '.join(repr(k) for k in missing)}.")
    try:
        return translate(cls(**kwargs))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{class_name}: invalid config {kwargs!r}: {err}") from err


def callbacks_from_file(path: PathLike, custom_objects: Optional[Mapping[str, Any]] = None) -> List[Any]:
    """The callbacks of a ``.json`` / ``.yaml`` file holding a list of callback configs (or one config).

    Raises:
        ValueError: a file that is not a list of configs, or a bad config (see :func:`from_config`).

    Example:
        >>> import json, os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "callbacks.json")
        >>> with open(path, "w") as f:
        ...     json.dump([{"class_name": "EarlyStopping", "config": {"patience": 3}}], f)
        >>> [type(cb).__name__ for cb in callbacks_from_file(path)]
        ['EarlyStopping']
    """
    content = read_config_file(path)
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        raise ValueError(
            f"Expected {os.fspath(path)} to hold a list of callback configs {{'class_name': ..., 'config': {{...}}}}. "
            f"Received: {content!r}"
        )
    return [from_config(item, custom_objects) for item in content]
