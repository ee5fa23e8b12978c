"""Saving and loading by file extension, as Keras picks the format from it.

* ``.keras`` — a whole model (see :mod:`keras_bridge.saving.archive`); read back by
  :func:`keras_bridge.load_model`, and for a Keras model also by ``keras.models.load_model``.
* ``.weights.h5`` — weights only: Keras's layout for a Keras model, tensors by ``state_dict`` name otherwise.
* ``.weights.pt`` — ``torch.save`` of the tensors (a torch module's ``state_dict``; a Keras model's variables by
  position), readable with ``torch.load(weights_only=True)``.
* ``.ckpt`` — a Lightning checkpoint of the running Trainer (``weights_only`` for ``save_weights``).
* ``.h5`` — Keras's legacy whole-model format (Keras models only).

Every write is atomic and done by global rank 0 only (:mod:`keras_bridge.saving.atomic`).

Example:
    >>> import tempfile, os, torch
    >>> import keras_bridge as kb
    >>> module = kb.KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse")
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> save_model(module, path)
    >>> restored = kb.load_model(path)
    >>> type(restored.model).__name__, restored.compiled
    ('Linear', True)
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Tuple

import h5py
import torch

import keras_bridge.saving.state as _state
from keras_bridge.saving.archive import append_bridge_entries, write_torch_archive
from keras_bridge.saving.atomic import atomic_write, file_suffix, is_writer
from keras_bridge.utils.compat import attached_trainer, dump_checkpoint

__all__ = ["load_weights", "read_state_file", "save_model", "save_weights", "write_state_file"]


def _check_target(path: str, overwrite: bool, allowed: Tuple[str, ...], what: str) -> str:
    suffix = file_suffix(path)
    if suffix not in allowed:
        raise ValueError(
            f"Expected the filepath of {what} to end in {', '.join(repr(s) for s in allowed)}. "
            f"Received: filepath={path}"
        )
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and `overwrite=False` was given.")
    return suffix


# ---------------------------------------------------------------------------- saving
def save_model(module: Any, filepath: str, overwrite: bool = True) -> None:
    """Save a :class:`~keras_bridge.KerasModule` (model, compile arguments, optimizer state) to one file.

    Args:
        module: the module to save.
        filepath: ``*.keras`` (restored by :func:`load_model`; for a Keras model also by
            ``keras.models.load_model``), ``*.ckpt`` (Lightning checkpoint) or ``*.h5`` (Keras models).
        overwrite: replace an existing file (default ``True``); ``False`` raises ``FileExistsError``.
    """
    filepath = os.fspath(filepath)
    allowed = (".keras", ".ckpt", ".h5") if module.is_keras else (".keras", ".ckpt")
    suffix = _check_target(filepath, overwrite, allowed, "a saved model")
    if not is_writer(module):
        return
    with atomic_write(filepath) as tmp:
        if suffix == ".ckpt":
            _write_lightning_checkpoint(module, tmp, weights_only=False)
        elif module.is_keras:
            type(module.model).save(module.model, tmp, overwrite=True)  # the class's method, not our override
            if suffix == ".keras":
                append_bridge_entries(tmp, module)
        else:
            write_torch_archive(tmp, module)


def save_weights(module: Any, filepath: str, overwrite: bool = True) -> None:
    """Save the wrapped model's weights to ``*.weights.h5``, ``*.weights.pt`` or ``*.ckpt`` (weights only)."""
    filepath = os.fspath(filepath)
    suffix = _check_target(filepath, overwrite, (".weights.h5", ".weights.pt", ".ckpt"), "saved weights")
    if not is_writer(module):
        return
    with atomic_write(filepath) as tmp:
        if suffix == ".ckpt":
            _write_lightning_checkpoint(module, tmp, weights_only=True)
        elif suffix == ".weights.pt":
            torch.save(_state.model_state(module), tmp)
        elif module.is_keras:
            type(module.model).save_weights(module.model, tmp, overwrite=True)
        else:
            with h5py.File(tmp, "w") as f:
                _state.write_tree(f, "model", module.model.state_dict())


def load_weights(module: Any, filepath: str) -> None:
    """Load weights written by :func:`save_weights` (any of its formats) into ``module.model``."""
    filepath = os.fspath(filepath)
    suffix = _check_target(filepath, True, (".weights.h5", ".weights.pt", ".ckpt"), "weights to load")
    if suffix == ".weights.h5" and module.is_keras:
        type(module.model).load_weights(module.model, filepath)
        return
    if suffix == ".weights.h5":
        with h5py.File(filepath, "r") as f:
            state = _state.read_tree(f, "model")
    elif suffix == ".weights.pt":
        _state.load_model_state(module, torch.load(filepath, map_location="cpu", weights_only=True), filepath)
        return
    else:
        full = torch.load(filepath, map_location="cpu", weights_only=True)["state_dict"]
        state = {k[len("model.") :]: v for k, v in full.items() if k.startswith("model.")}
    module.model.load_state_dict(state)


def _write_lightning_checkpoint(module: Any, tmp: str, weights_only: bool) -> None:
    trainer = attached_trainer(module)
    if trainer is None:
        raise ValueError(
            "A `.ckpt` file is a Lightning checkpoint of a running Trainer: save it during or after fit()."
        )
    # The checkpoint dict is built here rather than through trainer.save_checkpoint, which is a
    # collective (barrier) and would hang when only rank 0 decides to save.
    torch.save(dump_checkpoint(trainer, weights_only), tmp)


# ---------------------------------------------------------------------------- training-state files
def write_state_file(path: str, module: Any, attrs: Mapping[str, Any]) -> None:
    """Weights, optimizer and scheduler state and ``attrs`` in one HDF5 file, written atomically (rank 0 only)."""
    if not is_writer(module):
        return
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = "keras_bridge.state"
        f.attrs["attrs"] = json.dumps(dict(attrs))
        _state.write_tree(f, "model", _state.model_state(module))
        for key, value in _state.training_state(module).items():
            _state.write_tree(f, key, value)


def read_state_file(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(states, attrs)`` of :func:`write_state_file`.

    ``states`` has ``model`` and, when saved during a fit, ``optimizer`` and ``scheduler``.
    """
    with h5py.File(path, "r") as f:
        return {k: _state.read_tree(f, k) for k in f.keys()}, json.loads(f.attrs["attrs"])
