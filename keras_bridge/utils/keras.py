"""The one place where keras is imported.

Keras picks its backend once, at its first import, from ``KERAS_BACKEND``. The bridge needs the torch
backend (a Keras model must *be* a ``torch.nn.Module``), so this module sets the variable before the
first import and refuses to go on when keras was already imported with another backend.
"""

from __future__ import annotations

import json
import os
import sys
from types import ModuleType
from typing import Any, List, Optional

_keras: Optional[ModuleType] = None


class KerasBackendError(ImportError):
    """Raised when keras was imported with a backend other than torch."""


def select_torch_backend() -> None:
    """Make sure that keras, whenever it is imported, uses the torch backend.

    Called when ``keras_bridge`` is imported, so ``import keras_bridge; import keras`` gives a torch-backed
    keras without the user setting anything.

    Raises:
        KerasBackendError: keras is already loaded with another backend, or ``KERAS_BACKEND`` names
            another backend.
    """
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
        if backend != "torch":
            raise KerasBackendError(
                f"keras was imported with the {backend!r} backend before keras_bridge could select "
                "torch. Import keras_bridge before keras, or set KERAS_BACKEND=torch before starting "
                "Python."
            )
        return
    requested = os.environ.get("KERAS_BACKEND")
    if requested not in (None, "", "torch"):
        raise KerasBackendError(
            "keras_bridge runs Keras on the torch backend, but the environment variable "
            f"KERAS_BACKEND={requested!r} asks for another one. Unset it or set "
            "KERAS_BACKEND=torch before starting Python."
        )
    os.environ["KERAS_BACKEND"] = "torch"


def import_keras() -> ModuleType:
    """Return the ``keras`` module, imported with the torch backend.

    Returns:
        The ``keras`` package.

    Raises:
        KerasBackendError: keras was already imported with another backend.

    Example:
        >>> keras = import_keras()
        >>> keras.backend.backend()
        'torch'
    """
    global _keras
    if _keras is not None:
        return _keras
    select_torch_backend()
    import keras

    _keras = keras
    return keras


def keras_loaded() -> bool:
    """True once keras is imported (by the user or by the bridge): Keras objects can exist only then."""
    return "keras" in sys.modules


_configured_floatx: Optional[str] = None


def keras_floatx() -> str:
    """``keras.config.floatx()``, without importing keras while it is not loaded.

    Until keras is imported nobody can have called ``keras.config.set_floatx``, so the value is the one
    Keras will read at its import: the ``floatx`` of ``keras.json`` in ``$KERAS_HOME`` (else ``~/.keras``, or
    ``/tmp/.keras`` when the home directory is not writable), "float32" when the file or the key is missing.
    A file keras itself would reject (unreadable, another value) imports keras, which raises its own error.

    Example:
        >>> keras_floatx()
        'float32'
    """
    global _configured_floatx
    if keras_loaded():
        return import_keras().config.floatx()
    if _configured_floatx is None:
        home = os.environ.get("KERAS_HOME")
        if home is None:
            base = os.path.expanduser("~")
            home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
        path = os.path.expanduser(os.path.join(home, "keras.json"))
        config: Any = {}
        if os.path.exists(path):
            try:
                with open(path) as f:
                    config = json.load(f)
            except ValueError:  # Keras ignores a file that is not JSON
                config = {}
            except OSError:
                config = None
        value = config.get("floatx", "float32") if isinstance(config, dict) else None
        if value not in ("float16", "float32", "float64"):
            return import_keras().config.floatx()
        _configured_floatx = value
    return _configured_floatx


def is_keras_model(obj: object) -> bool:
    """True if ``obj`` is a Keras 3 ``Layer``/``Model`` (imports keras only if it is loaded)."""
    if "keras" not in sys.modules:
        return False
    keras = import_keras()
    return isinstance(obj, keras.layers.Layer)


def is_keras_object(obj: object, kind: str) -> bool:
    """True if ``obj`` is an instance of ``keras.<kind>`` (e.g. ``"losses.Loss"``) without importing keras."""
    if "keras" not in sys.modules:
        return False
    keras = import_keras()
    target: Any = keras
    for part in kind.split("."):
        target = getattr(target, part)
    return isinstance(obj, target)


def keras_input_names(model: Any) -> Optional[List[str]]:
    """The keys a dict ``x`` is matched by, as Keras matches them: the model's input structure's keys when it was
    built on a dict of inputs (whatever the inputs' generated names), else the input tensors' names.

    Example:
        >>> keras = import_keras()
        >>> inputs = {"query": keras.Input((2,)), "key": keras.Input((2,))}
        >>> model = keras.Model(inputs, keras.layers.Add()([inputs["query"], inputs["key"]]))
        >>> sorted(keras_input_names(model))
        ['key', 'query']
    """
    if not getattr(model, "inputs", None):
        return None
    structure = getattr(model, "input", None)
    if isinstance(structure, dict):
        return list(structure.keys())
    return [t.name for t in model.inputs]
