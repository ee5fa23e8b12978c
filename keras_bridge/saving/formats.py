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
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import h5py
import torch

import keras_bridge.saving.state as _state
from keras_bridge.saving.archive import append_bridge_entries, write_torch_archive
from keras_bridge.saving.atomic import atomic_write, file_suffix, is_writer
from keras_bridge.typing import PathLike
from keras_bridge.utils.compat import attached_trainer, dump_checkpoint

if TYPE_CHECKING:
    from keras_bridge.protocols import CallbackHost

__all__ = [
    "hold_saves",
    "load_tensors",
    "load_weights",
    "read_state_file",
    "release_saves",
    "save_model",
    "save_weights",
    "saves_held",
    "write_state_file",
]


# Modules whose training a NaN or infinite loss stopped (TerminateOnNaN): until their fit ends, no save
# replaces a file written before with weights that are not worth keeping.
_HELD: weakref.WeakSet[Any] = weakref.WeakSet()


def hold_saves(module: CallbackHost) -> None:
    """Skip (with a warning) every save of ``module`` until :func:`release_saves`."""
    _HELD.add(module)


def release_saves(module: CallbackHost) -> None:
    _HELD.discard(module)


def saves_held(module: CallbackHost, path: object = None) -> bool:
    """True (and a warning naming ``path``) while the saves of ``module`` are held."""
    if module not in _HELD:
        return False
    warnings.warn(
        f"Not writing {path if path is not None else 'a backup'}: training was stopped by a NaN or infinite loss "
        "(TerminateOnNaN), so the weights are not worth keeping. The file written before is left as it was.",
        UserWarning,
        stacklevel=3,
    )
    return True


# The method that handles a file of each kind, for errors that refuse it elsewhere.
_METHOD_FOR = {
    "a saved model": {
        ".weights.h5": "`save_weights({path!r})` (the weights only)",
        ".weights.pt": "`save_weights({path!r})` (the weights only)",
        ".h5": "`save('...keras')`: the legacy `.h5` format holds Keras models only",
    },
    "saved weights": {
        ".keras": "`save({path!r})` (model, compile arguments and optimizer state)",
        ".h5": "`save_weights('...weights.h5')`",
    },
    "weights to load": {
        ".keras": "`kb.load_model({path!r})` (it builds the module), or `KerasModule(model).load_weights` with a "
        "`.weights.h5` / `.weights.pt` file",
        ".h5": "`load_weights('...weights.h5')`",
    },
}


def _check_target(path: str, overwrite: bool, allowed: Tuple[str, ...], what: str) -> str:
    suffix = file_suffix(path)
    if suffix not in allowed:
        instead = _METHOD_FOR.get(what, {}).get(suffix)
        hint = f" For a `{suffix}` file, call {instead.format(path=path)} instead." if instead else ""
        raise ValueError(
            f"Expected the filepath of {what} to end in {', '.join(repr(s) for s in allowed)}. "
            f"Received: filepath={path}.{hint}"
        )
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and `overwrite=False` was given.")
    return suffix


# ---------------------------------------------------------------------------- saving
def save_model(module: CallbackHost, filepath: PathLike, overwrite: bool = True) -> None:
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
    if not is_writer(module) or saves_held(module, filepath):
        return
    with atomic_write(filepath) as tmp:
        if suffix == ".ckpt":
            _write_lightning_checkpoint(module, tmp, weights_only=False)
        elif module.is_keras:
            type(module.model).save(module.model, tmp, overwrite=True)  # the class's method, not our override
            # A model trained with its own steps is compiled by Keras alone: Keras's file holds it all.
            if suffix == ".keras" and getattr(module, "keras_step", None) is None:
                append_bridge_entries(tmp, module)
        else:
            write_torch_archive(tmp, module)


def save_weights(module: CallbackHost, filepath: PathLike, overwrite: bool = True) -> None:
    """Save the wrapped model's weights to ``*.weights.h5``, ``*.weights.pt`` or ``*.ckpt`` (weights only)."""
    filepath = os.fspath(filepath)
    suffix = _check_target(filepath, overwrite, (".weights.h5", ".weights.pt", ".ckpt"), "saved weights")
    if not is_writer(module) or saves_held(module, filepath):
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


def load_weights(module: CallbackHost, filepath: PathLike) -> None:
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
        _state.load_model_state(module, load_tensors(filepath), filepath)
        return
    else:
        full = load_tensors(filepath)["state_dict"]
        state = {k[len("model.") :]: v for k, v in full.items() if k.startswith("model.")}
    module.model.load_state_dict(state)


def load_tensors(filepath: str) -> Any:
    """``torch.load`` of a ``.weights.pt`` / ``.ckpt`` file that only ever reads tensors and plain data.

    Raises:
        ValueError: the file holds other pickled Python objects (which could run code when
            unpickled); they are refused, not loaded.
    """
    import pickle

    try:
        return torch.load(filepath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"Refused to load {filepath}: it holds pickled Python objects, not only tensors, and unpickling them "
            "could run arbitrary code. keras_bridge reads `.weights.pt` and `.ckpt` files with "
            "torch.load(weights_only=True). If you trust the file, load it yourself (weights_only=False) and pass "
            f"the tensors to load_state_dict. Reason: {str(err).splitlines()[0]}"
        ) from None


def _write_lightning_checkpoint(module: CallbackHost, tmp: str, weights_only: bool) -> None:
    trainer = attached_trainer(module)
    if trainer is None:
        raise ValueError(
            "A `.ckpt` file is a Lightning checkpoint of a running Trainer: save it during or after fit(), or call "
            "`save('model.keras')` to save the module outside a fit."
        )
    # The checkpoint dict is built here rather than through trainer.save_checkpoint, which is a
    # collective (barrier) and would hang when only rank 0 decides to save.
    torch.save(dump_checkpoint(trainer, weights_only), tmp)


# ---------------------------------------------------------------------------- training-state files
def write_state_file(
    path: str, module: CallbackHost, attrs: Mapping[str, Any], trees: Optional[Mapping[str, Any]] = None
) -> None:
    """Weights, optimizer and scheduler state and ``attrs`` in one HDF5 file, written atomically (rank 0 only).

    ``trees`` are more nested states (see :func:`keras_bridge.saving.state.write_tree`), read back by
    :func:`read_state_file` under their keys.
    """
    if not is_writer(module):
        return
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = "keras_bridge.state"
        f.attrs["attrs"] = json.dumps(dict(attrs))
        _state.write_tree(f, "model", _state.model_state(module))
        for key, value in {**_state.training_state(module), **(trees or {})}.items():
            _state.write_tree(f, key, value)


def read_state_file(path: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(states, attrs)`` of :func:`write_state_file`.

    ``states`` has ``model`` and, when saved during a fit, ``optimizer`` and ``scheduler``.
    """
    with h5py.File(path, "r") as f:
        return {k: _state.read_tree(f, k) for k in f.keys()}, json.loads(f.attrs["attrs"])
