"""Checks of the Keras arguments of ``fit``/``evaluate``/``predict``, before anything runs.

Every message follows Keras's template: what was expected, then ``Received: name=value``.
"""

from __future__ import annotations

import inspect
import numbers
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Tuple, Union

import lightning.pytorch as pl
import torch

from keras_bridge.callbacks.convert import callbacks_from_file, from_config
from keras_bridge.configs import is_config_file
from keras_bridge.utils.keras import import_keras, is_keras_model, keras_input_names

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

_VERBOSE = (0, 1, 2, "auto")


def check_verbose(verbose: Union[int, str]) -> int:
    """``verbose`` as 0, 1 or 2 (``"auto"`` is 1, as in Keras).

    Example:
        >>> check_verbose("auto")
        1
    """
    if verbose not in _VERBOSE or isinstance(verbose, bool):
        raise ValueError(f"Expected `verbose` to be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
    return 1 if verbose == "auto" else int(verbose)


def check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    """Refuse anything but an integer ``>= minimum`` (or None when allowed), naming the argument."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")


def check_fit_args(
    epochs: int,
    initial_epoch: int,
    validation_split: object,
    steps_per_epoch: object,
    validation_freq: object,
    shuffle: object,
) -> None:
    """The scalar arguments of ``fit``."""
    check_int("epochs", epochs, 0)
    check_int("initial_epoch", initial_epoch, 0)
    check_int("steps_per_epoch", steps_per_epoch, 1, allow_none=True)
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0 <= float(validation_split) < 1
    ):
        raise ValueError(
            f"Expected `validation_split` to be a float in [0, 1). Received: validation_split={validation_split!r}"
        )
    if isinstance(validation_freq, (list, tuple, set)):
        for v in validation_freq:
            check_int("validation_freq", v, 1)
    else:
        check_int("validation_freq", validation_freq, 1)
    if shuffle not in (True, False, "batch"):
        raise ValueError(f"Expected `shuffle` to be True, False or 'batch'. Received: shuffle={shuffle!r}")


def check_model(model: object) -> None:
    """Refuse a ``model`` that is neither a torch module nor a Keras model built with the torch backend."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            "Expected `model` to be a torch.nn.Module or a Keras model built with the torch "
            f"backend. Received: model of type {type(model).__name__}"
        )


def model_names(
    model: torch.nn.Module, output_names: Optional[Iterable[str]], input_names: Optional[Iterable[str]]
) -> Tuple[Optional[List[str]], Optional[List[str]]]:
    """``(output_names, input_names)`` as given, else a Keras model's own (``None`` for a torch module)."""
    if is_keras_model(model):
        if output_names is None:
            output_names = list(getattr(model, "output_names", None) or []) or None
        if input_names is None:
            input_names = keras_input_names(model)
    return (list(output_names) if output_names is not None else None), (
        list(input_names) if input_names is not None else None
    )


def forward_parameters(model: torch.nn.Module) -> Optional[List[str]]:
    """The names a dict ``x`` may give a torch module's ``forward`` (None for ``**kwargs`` or no signature).

    Example:
        >>> import torch
        >>> forward_parameters(torch.nn.Linear(2, 1))
        ['input']
    """
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_input_names(module: BridgeModule, x: object) -> None:
    """A dict ``x`` must name exactly the model's inputs (a torch ``forward``'s defaulted ones may be left out)."""
    if not isinstance(x, dict):
        return
    expected = module.input_names or (None if module.is_keras else module.forward_parameters)
    if not expected:
        return
    missing = [n for n in expected if n not in x]
    unknown = [k for k in x if k not in expected]
    if not (module.is_keras or module.input_names):
        params = inspect.signature(module.model.forward).parameters
        missing = [n for n in missing if params[n].default is inspect.Parameter.empty]
    if missing or unknown:
        raise ValueError(
            f"The dict `x` does not match the model's inputs {list(expected)}: missing "
            f"{missing}, unexpected {unknown}. Received: x keys={list(x.keys())}"
        )


def split_callbacks(callbacks: object) -> Tuple[List[Any], List[Any]]:
    """``callbacks`` as ``(keras_callbacks, lightning_callbacks)``.

    Config dicts become Keras callbacks, and so does each config of a ``.json`` / ``.yaml`` file named
    (as ``callbacks`` or as an entry of the list).
    """
    if callbacks is None:
        return [], []
    if not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    callbacks = [c for cb in callbacks for c in (callbacks_from_file(cb) if is_config_file(cb) else [cb])]
    keras = import_keras()
    keras_cbs, lightning_cbs = [], []
    for cb in callbacks:
        if isinstance(cb, dict):
            cb = from_config(cb)
        if isinstance(cb, keras.callbacks.Callback):
            keras_cbs.append(cb)
        elif isinstance(cb, pl.Callback):
            lightning_cbs.append(cb)
        else:
            raise TypeError(
                "Expected each entry of `callbacks` to be a keras.callbacks.Callback, a Keras callback config "
                "dict ({'class_name': ..., 'config': {...}}), a JSON/YAML file of such configs, or a lightning "
                "Callback. "
                f"Received: {cb!r} of type {type(cb).__name__}"
            )
    return keras_cbs, lightning_cbs
