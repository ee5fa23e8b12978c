"""The ``.keras`` archive: Keras's zip layout, plus the bridge's entries, for Keras models and torch modules.

* For a Keras model: Keras's own archive (``keras.models.load_model`` reads it), plus
  ``keras_bridge.json`` (compile arguments, output names) and ``keras_bridge.state.h5`` (optimizer
  and LR-scheduler state).
* For a torch module: the same zip layout: ``config.json`` (the module described as JSON, see
  :mod:`keras_bridge.saving.serialization`), ``model.weights.h5`` and ``keras_bridge.json``.

Nothing is pickled, so reading an archive never runs code from the file.
"""

from __future__ import annotations

import datetime
import json
import warnings
import weakref
import zipfile
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, cast

import torch

import keras_bridge.saving.serialization as S
import keras_bridge.saving.state as _state
from keras_bridge._version import __version__

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule, CallbackHost

BRIDGE_JSON = "keras_bridge.json"
BRIDGE_STATE = "keras_bridge.state.h5"
TORCH_CLASS = "keras_bridge.TorchModule"
_FORMAT_VERSION = 1
# Architecture descriptions already checked (rebuilt once and compared), per wrapped torch module.
_checked: weakref.WeakKeyDictionary[torch.nn.Module, Tuple[Optional[dict], str]] = weakref.WeakKeyDictionary()
# Modules whose unserializable compile arguments were already reported: one warning per module.
_warned: weakref.WeakSet[Any] = weakref.WeakSet()


def compile_arguments(module: BridgeModule) -> Dict[str, Any]:
    """The arguments of the module's last ``compile()`` call, as given."""
    assert module.loss_plan is not None and module.metric_plan is not None
    return {"optimizer": module.optimizer_spec, **module.loss_plan.arguments, **module.metric_plan.arguments}


def _bridge_json(module: CallbackHost) -> Dict[str, Any]:
    config, note = None, None
    if module.compiled:
        args = compile_arguments(cast("BridgeModule", module))  # only a KerasModule is compiled
        try:
            config = S.serialize(args)
        except S.NotSerializable as err:
            note = f"compile() arguments not saved: {err}"
            _warn_once(module, f"{note}. load_model() will return an uncompiled module.")
    return {
        "format": "keras_bridge",
        "version": _FORMAT_VERSION,
        "model_kind": "keras" if module.is_keras else "torch",
        "output_names": module.declared_output_names,
        "input_names": module.input_names,
        "compile_config": config,
        "compile_note": note,
    }


def bridge_entry(module: CallbackHost) -> Dict[str, Any]:
    """The bridge's JSON description of ``module`` (``keras_bridge.json``): compile arguments, names, kind.

    Also the ``keras_bridge`` entry of the Lightning checkpoints of a module
    (:mod:`keras_bridge.saving.lightning_checkpoint`).
    """
    return _bridge_json(module)


def describe_torch_model(model: torch.nn.Module) -> Tuple[Optional[dict], str]:
    """``(description, "")`` of a torch module as JSON (checked once by rebuilding it), or ``(None, why)``."""
    return _architecture(model)


def _warn_once(module: CallbackHost, message: str) -> None:
    if module not in _warned:
        _warned.add(module)
        warnings.warn(message, stacklevel=4)


def append_bridge_entries(path: str, module: CallbackHost) -> None:
    """Add the bridge's compile and training-state entries to a Keras-written ``.keras`` file."""
    states = _state.training_state(module)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(BRIDGE_JSON, json.dumps(_bridge_json(module)))
        if states:
            zf.writestr(BRIDGE_STATE, _state.states_to_bytes(states))


def _architecture(model: torch.nn.Module) -> Tuple[Optional[dict], str]:
    """The JSON description of ``model``, checked once by rebuilding it and comparing the state_dict shapes."""
    if model in _checked:
        return _checked[model]
    try:
        description = S.serialize(model)
        rebuilt = _rebuild_quietly(description)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
        result: Tuple[Optional[dict], str] = (
            (description, "")
            if got == expected
            else (None, f"rebuilding {type(model).__qualname__} from its description gives other weights")
        )
    except Exception as err:
        result = (None, str(err))
    if result[0] is None:
        warnings.warn(
            f"The module {type(model).__qualname__} cannot be described for `load_model` ({result[1]}). The "
            ".keras file still holds its weights (load them with `keras_bridge.saving.formats.load_weights` into a new "
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
        except Exception:
            return S.deserialize(description, safe_mode=False)


def write_torch_archive(path: str, module: CallbackHost) -> None:
    description, reason = _architecture(module.model)
    config = {"class_name": TORCH_CLASS, "config": description, "note": reason or None}
    metadata = {
        "keras_bridge_version": __version__,
        "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
    }
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps(metadata))
        zf.writestr("config.json", json.dumps(config))
        states = {"model": module.model.state_dict(), **_state.training_state(module)}
        zf.writestr("model.weights.h5", _state.states_to_bytes(states))
        zf.writestr(BRIDGE_JSON, json.dumps(_bridge_json(module)))


def read_archive(filepath: str) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """``(config, bridge, states)`` of a ``.keras`` file: Keras's ``config.json``, the bridge's entry
    (empty for a file Keras wrote) and the saved tensors (model weights of a torch module, optimizer state).
    """
    with zipfile.ZipFile(filepath) as zf:
        names = set(zf.namelist())
        config = json.loads(zf.read("config.json"))
        bridge = json.loads(zf.read(BRIDGE_JSON)) if BRIDGE_JSON in names else {}
        state_entry = "model.weights.h5" if config.get("class_name") == TORCH_CLASS else BRIDGE_STATE
        states = _state.states_from_bytes(zf.read(state_entry)) if state_entry in names else {}
    return config, bridge, states
