"""Lightning checkpoints (``.ckpt``) of a :class:`~keras_bridge.KerasModule`: what the bridge adds, and restoring.

Whoever writes the checkpoint (Lightning's own ``ModelCheckpoint``, ``trainer.save_checkpoint``,
``module.save("m.ckpt")``), ``KerasModule.on_save_checkpoint`` adds one JSON entry, ``"keras_bridge"``
(:func:`checkpoint_entry`): the compile arguments as :mod:`keras_bridge.saving.serialization` describes
them, the output and input names, the model described as JSON (for :func:`keras_bridge.load_model`), and
for a Keras model the path of each variable in structural order. The History travels in the module's
``state_dict`` (extra state), the optimizer and LR-scheduler states in Lightning's own entries.

``KerasModule.on_load_checkpoint``, which Lightning calls from ``KerasModule.load_from_checkpoint`` and
from ``trainer.fit(module, ckpt_path=...)``, runs :func:`restore_from_checkpoint`:

* a Keras model's ``state_dict`` keys carry Keras's auto-generated variable paths (``dense_3/kernel``),
  which differ between two instances of one model: they are renamed to this instance's, by position;
* outside a running Trainer (``load_from_checkpoint``), an uncompiled module is compiled with the saved
  arguments and the saved optimizer and scheduler states are loaded when its next ``fit`` starts;
* inside ``trainer.fit(ckpt_path=...)``, an uncompiled module is compiled the same way, and Lightning
  restores the optimizer, the scheduler and the loops itself.

Reading never unpickles: :func:`read_checkpoint` uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, MutableMapping, Optional, Union

import torch

import keras_bridge.saving.serialization as S
from keras_bridge.saving.archive import bridge_entry, describe_torch_model
from keras_bridge.utils.compat import attached_trainer, loader_states_lightning_skips

if TYPE_CHECKING:
    import keras

    from keras_bridge.protocols import BridgeModule

#: The key of the bridge's entry in a Lightning checkpoint dict.
KEY = "keras_bridge"
_PARAMS = "_torch_params."  # where Keras's torch backend registers a layer's variables as torch parameters


def _keras(module: BridgeModule) -> Any:
    return module.model  # a keras.Model: Any to the type checker


def _keras_model_config(model: keras.Model) -> Optional[Dict[str, Any]]:
    try:
        description = S.serialize(model)
    except Exception:  # a subclassed Keras model without get_config
        return None
    inner = description.get("config")
    if isinstance(inner, dict):
        inner.pop("compile_config", None)  # the bridge compiles it (Keras would compile it on load too)
    return description


def checkpoint_entry(module: BridgeModule) -> Dict[str, Any]:
    """The ``"keras_bridge"`` entry of a checkpoint of ``module`` (JSON only, so ``weights_only`` loading works)."""
    entry = dict(bridge_entry(module))
    if module.is_keras:
        entry["model_config"] = _keras_model_config(module.model)
        entry["model_note"] = None if entry["model_config"] is not None else "the Keras model has no get_config()"
        entry["keras_variable_paths"] = [v.path for v in _keras(module).variables]
    else:
        entry["model_config"], note = describe_torch_model(module.model)
        entry["model_note"] = note or None
    return entry


def add_checkpoint_entry(module: BridgeModule, checkpoint: Dict[str, Any]) -> None:
    """Add the bridge's entry to a Lightning checkpoint dict (``KerasModule.on_save_checkpoint``).

    A model trained with its own steps refuses Lightning checkpoints (see
    :meth:`keras_bridge.trainer.keras_step.KerasSteps.refuse_lightning_checkpoint`).
    """
    if module.keras_step is not None:
        module.keras_step.refuse_lightning_checkpoint()
    checkpoint[KEY] = checkpoint_entry(module)


def rename_keras_state(
    module: BridgeModule, state_dict: MutableMapping[str, Any], saved_paths: Optional[List[str]]
) -> None:
    """Rename a Keras model's saved ``state_dict`` keys to this instance's variable paths, by position."""
    if not module.is_keras or not saved_paths:
        return
    current = [v.path for v in _keras(module).variables]
    if current == list(saved_paths) or len(current) != len(saved_paths):
        return
    mapping = dict(zip(saved_paths, current))

    def rename(key: str) -> str:
        prefix, sep, path = key.rpartition(_PARAMS)
        if not key.startswith("model.") or not sep or path not in mapping:
            return key
        return prefix + sep + mapping[path]

    items = [(rename(k), v) for k, v in state_dict.items()]
    state_dict.clear()
    state_dict.update(items)


def match_keras_state(module: BridgeModule, state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state_dict`` with a Keras model's keys renamed to this instance's, when they are another instance's.

    Keras gives a model it rebuilds (unpickled in a ``ddp_spawn`` worker, say) new variable paths; the
    ``_extra_state`` entry carries the saver's paths in variable order, so its weights map by position. Keys
    that already name this instance's variables are left alone, so a state renamed once is never renamed again.
    """
    extra = state_dict.get("_extra_state")
    saved_paths = extra.get("keras_variable_paths") if isinstance(extra, Mapping) else None
    if not module.is_keras or not saved_paths:
        return state_dict
    own = {key for key in module.state_dict() if key.startswith("model.")}
    if own & set(state_dict):
        return state_dict
    renamed = dict(state_dict)
    rename_keras_state(module, renamed, list(saved_paths))
    return renamed


def compile_arguments(
    entry: Mapping[str, Any], custom_objects: Optional[Mapping[str, Any]] = None, safe_mode: bool = True
) -> Optional[Dict[str, Any]]:
    """The saved ``compile`` arguments of an entry, or None (with a warning when they could not be saved)."""
    if entry.get("compile_config") is not None:
        return S.deserialize(entry["compile_config"], custom_objects, safe_mode)
    if entry.get("compile_note"):
        warnings.warn(f"The module is returned uncompiled: {entry['compile_note']}.", stacklevel=4)
    return None


def restore_from_checkpoint(
    module: BridgeModule,
    checkpoint: MutableMapping[str, Any],
    custom_objects: Optional[Mapping[str, Any]] = None,
    safe_mode: bool = True,
    compile: bool = True,
) -> None:
    """Prepare ``module`` for ``load_state_dict(checkpoint["state_dict"])`` (see the module docstring).

    A module that is already compiled (by the user, or by compile arguments given to its constructor)
    keeps its compile.
    """
    entry = checkpoint.get(KEY)
    if not isinstance(entry, Mapping):
        return
    if attached_trainer(module) is not None:  # trainer.fit(ckpt_path=...): the loaders' positions, for on_train_start
        module.pending_loader_states = loader_states_lightning_skips(checkpoint)
    if isinstance(checkpoint.get("state_dict"), MutableMapping):
        rename_keras_state(module, checkpoint["state_dict"], entry.get("keras_variable_paths"))
    if not compile:
        return
    if not module.compiled:
        arguments = compile_arguments(entry, custom_objects, safe_mode)
        if arguments is None:
            return
        module.compile(**arguments)
    if attached_trainer(module) is None:  # load_from_checkpoint: the state waits for the next fit
        states: Dict[str, Any] = {}
        if checkpoint.get("optimizer_states"):
            states["optimizer"] = checkpoint["optimizer_states"][0]
        if checkpoint.get("lr_schedulers"):
            states["scheduler"] = checkpoint["lr_schedulers"][0]
        if states:
            module.restore_training_state(states)


def load_loader_states(module: BridgeModule) -> None:
    """Give the running fit's training loaders the positions a checkpoint held (``KerasModule.on_train_start``).

    ``trainer.fit(ckpt_path=...)`` from an epoch's end: the array loaders' shuffle seed and epoch come back
    too, so the next epochs draw the orders of the run that wrote the checkpoint.
    """
    states, module.pending_loader_states = module.pending_loader_states, []
    loaders = module.trainer.train_dataloader
    flat = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    for loader, state in zip(flat, states):
        if callable(getattr(loader, "load_state_dict", None)):
            loader.load_state_dict(state)


def read_checkpoint(filepath: Union[str, os.PathLike]) -> Dict[str, Any]:
    """A ``.ckpt`` file's dict, loaded without unpickling (``torch.load(weights_only=True)``).

    Raises:
        ValueError: a file that holds more than tensors and plain data.
    """
    filepath = os.fspath(filepath)
    try:
        return torch.load(filepath, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{filepath} cannot be read without unpickling ({str(err).splitlines()[0]}). If you trust the file, "
            "use `KerasModule.load_from_checkpoint(path, model=..., weights_only=False)`."
        ) from err


def model_from_entry(
    entry: Mapping[str, Any], filepath: str, custom_objects: Optional[Mapping[str, Any]], safe_mode: bool
) -> Any:
    """The wrapped model rebuilt from the entry's description (weights not loaded).

    Raises:
        ValueError: the model was not described when the checkpoint was written.
    """
    if entry.get("model_config") is None:
        raise ValueError(
            f"{filepath} holds a model that could not be described when it was saved ({entry.get('model_note')}). "
            "Build the model yourself and load the checkpoint with `KerasModule.load_from_checkpoint(path, "
            "model=model)`."
        )
    return S.deserialize(entry["model_config"], custom_objects, safe_mode)
