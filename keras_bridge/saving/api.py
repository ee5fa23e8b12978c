"""``load_model``: a :class:`~keras_bridge.KerasModule` back from a ``.keras`` file or a Lightning ``.ckpt``.

The one part of :mod:`keras_bridge.saving` that builds a module, and so the one that imports it.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Dict, Mapping, Optional

import keras_bridge.saving.lightning_checkpoint as lightning_checkpoint
import keras_bridge.saving.serialization as S
from keras_bridge.module import KerasModule
from keras_bridge.saving.archive import TORCH_CLASS, read_archive
from keras_bridge.saving.atomic import file_suffix
from keras_bridge.utils.keras import import_keras


def load_model(
    filepath: str, custom_objects: Optional[Mapping[str, Any]] = None, compile: bool = True, safe_mode: bool = True
) -> Any:
    """Restore a :class:`~keras_bridge.KerasModule` from a ``.keras`` file or a ``.ckpt``, compile state included.

    Reads ``.keras`` files written by the bridge (torch modules and Keras models) and plain Keras
    ``.keras`` files (their Keras compile config, if any, is used), and the Lightning checkpoints of a
    ``KerasModule`` (whoever wrote them: Lightning's ``ModelCheckpoint``, ``trainer.save_checkpoint``;
    see :mod:`keras_bridge.saving.lightning_checkpoint`), History included. The optimizer state saved in
    the file is loaded into the optimizer at the start of the next ``fit`` (unless ``compile`` is called
    again).

    Args:
        filepath: the ``.keras`` or ``.ckpt`` file.
        custom_objects: ``{name: class_or_function}`` for user classes named in the file.
        compile: restore the compile arguments (default ``True``); ``False`` returns an uncompiled module.
        safe_mode: refuse to import anything outside torch/torchmetrics/keras not in ``custom_objects``.

    Returns:
        The restored ``KerasModule``.

    Raises:
        ValueError: not a ``.keras`` or ``.ckpt`` file, or a module that was saved without a usable description.
    """
    filepath = os.fspath(filepath)
    if file_suffix(filepath) == ".ckpt":
        return _load_checkpoint(filepath, custom_objects, compile, safe_mode)
    if file_suffix(filepath) != ".keras" or not zipfile.is_zipfile(filepath):
        hint = ""
        if file_suffix(filepath) in (".weights.h5", ".weights.pt"):
            hint = (
                " A weights file holds no model: build the module and call "
                f"`KerasModule(model).load_weights({filepath!r})` instead."
            )
        raise ValueError(f"`load_model` reads `.keras` and `.ckpt` files. Received: filepath={filepath}.{hint}")
    config, bridge, states = read_archive(filepath)
    if config.get("class_name") == TORCH_CLASS:
        if config.get("config") is None:
            raise ValueError(
                f"{filepath} holds a torch module that could not be described when it was saved "
                f"({config.get('note')}). Build the module yourself and load the weights with "
                "`KerasModule(model).load_weights(path)`, or give its class a `get_config()`."
            )
        model = S.deserialize(config["config"], custom_objects, safe_mode)
        model.load_state_dict(states.pop("model"))
    else:
        model = import_keras().saving.load_model(
            filepath, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    module = KerasModule(model, output_names=bridge.get("output_names"), input_names=bridge.get("input_names"))
    if compile:
        arguments = _compile_arguments(bridge, config, custom_objects, safe_mode)
        if arguments is not None:
            module.compile(**arguments)
            if states:
                module.restore_training_state(states)
    return module


def _load_checkpoint(filepath: str, custom_objects: Optional[Mapping[str, Any]], compile: bool, safe_mode: bool) -> Any:
    checkpoint = lightning_checkpoint.read_checkpoint(filepath)
    entry = checkpoint.get(lightning_checkpoint.KEY)
    if not isinstance(entry, dict):
        raise ValueError(
            f"{filepath} is not a checkpoint of a KerasModule (it has no {lightning_checkpoint.KEY!r} entry). "
            "Load it with `KerasModule.load_from_checkpoint(path, model=...)`."
        )
    model = lightning_checkpoint.model_from_entry(entry, filepath, custom_objects, safe_mode)
    module = KerasModule(model, output_names=entry.get("output_names"), input_names=entry.get("input_names"))
    lightning_checkpoint.restore_from_checkpoint(module, checkpoint, custom_objects, safe_mode, compile=compile)
    module.load_state_dict(checkpoint["state_dict"])
    return module


def _compile_arguments(
    bridge: Mapping[str, Any], config: Mapping[str, Any], custom_objects: Optional[Mapping[str, Any]], safe_mode: bool
) -> Optional[Dict[str, Any]]:
    if bridge.get("compile_config") is not None or bridge.get("compile_note"):
        return lightning_checkpoint.compile_arguments(bridge, custom_objects, safe_mode)
    keras_compile = config.get("compile_config")
    if not keras_compile:
        return None
    # A file written by Keras itself: its serialized compile() arguments.
    keras = import_keras()

    def load(value: Any) -> Any:
        return keras.saving.deserialize_keras_object(value, custom_objects=custom_objects, safe_mode=safe_mode)

    return {
        key: load(keras_compile.get(key))
        for key in ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
    }
