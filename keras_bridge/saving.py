"""Files: atomic writes, the ``.keras`` / weights / Lightning-checkpoint formats, and :func:`load_model`.

What each extension holds (``save_model`` / ``save_weights`` pick the format from it, as Keras does):

* ``.keras`` — a whole model. For a Keras model, Keras's own archive (``keras.models.load_model``
  reads it), plus two bridge entries: ``keras_bridge.json`` (compile arguments, output names) and
  ``keras_bridge.state.h5`` (optimizer and LR-scheduler state). For a torch module, the same zip
  layout: ``config.json`` (the module described as JSON, see :mod:`keras_bridge._serialize`),
  ``model.weights.h5`` and the two bridge entries. Nothing is pickled: :func:`load_model` is safe on
  untrusted files, like Keras's ``safe_mode=True``.
* ``.weights.h5`` — weights only: Keras's layout for a Keras model, tensors by ``state_dict`` name otherwise.
* ``.weights.pt`` — ``torch.save`` of the tensors (a torch module's ``state_dict``; a Keras model's variables by
  position), readable with ``torch.load(weights_only=True)``.
* ``.ckpt`` — a Lightning checkpoint of the running Trainer (``weights_only`` for ``save_weights``).
* ``.h5`` — Keras's legacy whole-model format (Keras models only).

Every file is written to a temporary file in the target's folder and moved over the target with
``os.replace``, so a process killed during a save leaves the previous file (or none), never a
truncated one. Under DDP only global rank 0 writes.

Example:
    >>> import tempfile, os, torch
    >>> import keras_bridge as kb
    >>> module = kb.KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse")
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> save_model(module, path)
    >>> restored = load_model(path)
    >>> type(restored.model).__name__, restored.compiled
    ('Linear', True)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
import warnings
import weakref
import zipfile
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import h5py
import torch

from keras_bridge import _serialize as S
from keras_bridge import _state
from keras_bridge._keras import import_keras

__all__ = ["atomic_write", "load_model", "load_weights", "save_model", "save_weights"]

SUFFIXES = (".weights.h5", ".weights.pt", ".keras", ".ckpt", ".h5")
_BRIDGE_JSON = "keras_bridge.json"
_BRIDGE_STATE = "keras_bridge.state.h5"
_TORCH_CLASS = "keras_bridge.TorchModule"
_FORMAT_VERSION = 1
# Architecture descriptions already checked (rebuilt once and compared), per wrapped torch module.
_checked: "weakref.WeakKeyDictionary[torch.nn.Module, Tuple[Optional[dict], str]]" = weakref.WeakKeyDictionary()


def file_suffix(path: str) -> str:
    """The format-defining suffix of ``path`` (``".weights.h5"`` before ``".h5"``), or ``""``."""
    return next((s for s in SUFFIXES if str(path).endswith(s)), "")


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` with ``os.replace``.

    The temporary file is in the same folder (so the rename is atomic) and keeps the suffix (so Keras
    picks the same format). On any error it is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with atomic_write(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read()
        'done'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = file_suffix(path) or os.path.splitext(path)[1]
    stem = os.path.basename(path)[: len(os.path.basename(path)) - len(suffix)]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _trainer(module: Any) -> Any:
    return getattr(module, "_trainer", None)


def is_writer(module: Any) -> bool:
    """True unless ``module`` runs under a Trainer on a process other than global rank 0."""
    trainer = _trainer(module)
    return trainer is None or trainer.is_global_zero


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
                _append_bridge_entries(tmp, module)
        else:
            _write_torch_archive(tmp, module)


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
        state = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    module.model.load_state_dict(state)


def _write_lightning_checkpoint(module: Any, tmp: str, weights_only: bool) -> None:
    trainer = _trainer(module)
    if trainer is None:
        raise ValueError("A `.ckpt` file is a Lightning checkpoint of a running Trainer: save it during or after fit().")
    # The checkpoint dict is built here rather than through trainer.save_checkpoint, which is a
    # collective (barrier) and would hang when only rank 0 decides to save.
    torch.save(trainer._checkpoint_connector.dump_checkpoint(weights_only), tmp)


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
    """``(states, attrs)`` of :func:`write_state_file`; ``states`` has ``model`` and maybe ``optimizer``/``scheduler``."""
    with h5py.File(path, "r") as f:
        return {k: _state.read_tree(f, k) for k in f.keys()}, json.loads(f.attrs["attrs"])


# ---------------------------------------------------------------------------- the .keras archive
def _bridge_json(module: Any) -> Dict[str, Any]:
    config, note = None, None
    if module.compiled:
        args = {"optimizer": module.optimizer_spec, "loss": module.loss_plan._loss,
                "loss_weights": module.loss_plan._weights, "metrics": module.metric_plan._metrics,
                "weighted_metrics": module.metric_plan._weighted}
        try:
            config = S.serialize(args)
        except S.NotSerializable as err:
            note = f"compile() arguments not saved: {err}"
            _warn_once(module, "_kb_compile_warned", f"{note}. load_model() will return an uncompiled module.")
    return {"format": "keras_bridge", "version": _FORMAT_VERSION, "model_kind": "keras" if module.is_keras else "torch",
            "output_names": module.declared_output_names, "input_names": module.input_names,
            "compile_config": config, "compile_note": note}


def _warn_once(module: Any, flag: str, message: str) -> None:
    if not getattr(module, flag, False):
        object.__setattr__(module, flag, True)
        warnings.warn(message, stacklevel=3)


def _append_bridge_entries(path: str, module: Any) -> None:
    states = _state.training_state(module)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(_BRIDGE_JSON, json.dumps(_bridge_json(module)))
        if states:
            zf.writestr(_BRIDGE_STATE, _state.states_to_bytes(states))


def _architecture(model: torch.nn.Module) -> Tuple[Optional[dict], str]:
    """The JSON description of ``model``, checked once by rebuilding it and comparing the state_dict shapes."""
    if model in _checked:
        return _checked[model]
    try:
        description = S.serialize(model)
        rebuilt = _rebuild_quietly(description)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        result: Tuple[Optional[dict], str] = (description, "") if got == expected else (
            None, f"rebuilding {type(model).__qualname__} from its description gives other weights")
    except Exception as err:  # noqa: BLE001 - any failure means "not describable"; the reason is kept
        result = (None, str(err))
    if result[0] is None:
        warnings.warn(
            f"The module {type(model).__qualname__} cannot be described for `load_model` ({result[1]}). The "
            ".keras file still holds its weights (load them with `keras_bridge.saving.load_weights` into a new "
            "instance); define `get_config()` returning the constructor arguments to make it loadable.",
            stacklevel=3,
        )
    _checked[model] = result
    return result


def _rebuild_quietly(description: dict) -> torch.nn.Module:
    # A forked RNG leaves training randomness unchanged; the meta device needs no memory (some
    # constructors cannot run there: then on the CPU).
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return S.deserialize(description, safe_mode=False)
        except Exception:  # noqa: BLE001 - retried on the CPU, where a real failure surfaces
            return S.deserialize(description, safe_mode=False)


def _write_torch_archive(path: str, module: Any) -> None:
    description, reason = _architecture(module.model)
    config = {"class_name": _TORCH_CLASS, "config": description, "note": reason or None}
    metadata = {"keras_bridge_version": _bridge_version(), "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps(metadata))
        zf.writestr("config.json", json.dumps(config))
        states = {"model": module.model.state_dict(), **_state.training_state(module)}
        zf.writestr("model.weights.h5", _state.states_to_bytes(states))
        zf.writestr(_BRIDGE_JSON, json.dumps(_bridge_json(module)))


def _bridge_version() -> str:
    from keras_bridge import __version__

    return __version__


# ---------------------------------------------------------------------------- loading
def load_model(filepath: str, custom_objects: Optional[Mapping[str, Any]] = None, compile: bool = True,
               safe_mode: bool = True) -> Any:
    """Restore a :class:`~keras_bridge.KerasModule` from a ``.keras`` file, compile state included.

    Reads files written by the bridge (torch modules and Keras models) and plain Keras ``.keras``
    files (their Keras compile config, if any, is used). The optimizer state saved in the file is
    loaded into the optimizer at the start of the next ``fit`` (unless ``compile`` is called again).

    Args:
        filepath: the ``.keras`` file.
        custom_objects: ``{name: class_or_function}`` for user classes named in the file.
        compile: restore the compile arguments (default ``True``); ``False`` returns an uncompiled module.
        safe_mode: refuse to import anything outside torch/torchmetrics/keras not in ``custom_objects``.

    Returns:
        The restored ``KerasModule``.

    Raises:
        ValueError: not a ``.keras`` file, or a module that was saved without a usable description.
    """
    from keras_bridge.module import KerasModule

    filepath = os.fspath(filepath)
    if file_suffix(filepath) != ".keras" or not zipfile.is_zipfile(filepath):
        raise ValueError(f"`load_model` reads `.keras` files. Received: filepath={filepath}")
    with zipfile.ZipFile(filepath) as zf:
        names = set(zf.namelist())
        config = json.loads(zf.read("config.json"))
        bridge = json.loads(zf.read(_BRIDGE_JSON)) if _BRIDGE_JSON in names else {}
        state_entry = "model.weights.h5" if config.get("class_name") == _TORCH_CLASS else _BRIDGE_STATE
        states = _state.states_from_bytes(zf.read(state_entry)) if state_entry in names else {}
    if config.get("class_name") == _TORCH_CLASS:
        if config.get("config") is None:
            raise ValueError(
                f"{filepath} holds a torch module that could not be described when it was saved "
                f"({config.get('note')}). Build the module yourself and load the weights with "
                "`keras_bridge.saving.load_weights`, or give its class a `get_config()`."
            )
        model = S.deserialize(config["config"], custom_objects, safe_mode)
        model.load_state_dict(states.pop("model"))
    else:
        model = import_keras().saving.load_model(filepath, custom_objects=custom_objects, compile=False,
                                                 safe_mode=safe_mode)
    module = KerasModule(model, output_names=bridge.get("output_names"), input_names=bridge.get("input_names"))
    if compile:
        arguments = _compile_arguments(bridge, config, custom_objects, safe_mode)
        if arguments is not None:
            module.compile(**arguments)
            if states:
                object.__setattr__(module, "_kb_pending_state", (module.optimizer_spec, states))
    return module


def _compile_arguments(bridge: Mapping[str, Any], config: Mapping[str, Any], custom_objects: Any,
                       safe_mode: bool) -> Optional[Dict[str, Any]]:
    if bridge.get("compile_config") is not None:
        return S.deserialize(bridge["compile_config"], custom_objects, safe_mode)
    if bridge.get("compile_note"):
        warnings.warn(f"The model is returned uncompiled: {bridge['compile_note']}.", stacklevel=3)
        return None
    keras_compile = config.get("compile_config")
    if not keras_compile:
        return None
    # A file written by Keras itself: its serialized compile() arguments.
    keras = import_keras()

    def load(value: Any) -> Any:
        return keras.saving.deserialize_keras_object(value, custom_objects=custom_objects, safe_mode=safe_mode)

    return {key: load(keras_compile.get(key)) for key in ("optimizer", "loss", "loss_weights", "metrics",
                                                          "weighted_metrics")}


def take_pending_state(module: Any) -> Optional[Dict[str, Any]]:
    """The optimizer/scheduler state :func:`load_model` left for the next fit, if still valid (then forgotten)."""
    pending = getattr(module, "_kb_pending_state", None)
    if pending is None:
        return None
    object.__setattr__(module, "_kb_pending_state", None)
    spec, states = pending
    return states if spec is module.optimizer_spec else None
