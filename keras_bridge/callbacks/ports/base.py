"""Keras subclasses built on first use, so that importing ``keras_bridge`` does not import keras.

A port is written as a plain mixin class (importable without keras); :func:`keras_subclass` puts it
in front of the Keras class it replaces, once, when the name is first looked up through the module's
``__getattr__``. The result is a real subclass: ``isinstance(cb, keras.callbacks.ModelCheckpoint)``
holds, and Keras's own methods run wherever the port does not override them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

from keras_bridge.utils.compat import set_keras_callback_model
from keras_bridge.utils.keras import import_keras

_built: Dict[str, type] = {}

if TYPE_CHECKING:
    # For the type checker a port is what it becomes: a Keras callback (typed Any: keras is untyped).
    KerasCallbackBase = Any
else:
    KerasCallbackBase = object


def keras_subclass(name: str, mixin: type, keras_name: str, module: str, base: Any = None) -> type:
    """``type(name, (mixin, keras.callbacks.<keras_name>), ...)``, built once and cached.

    ``base``, when given, replaces the Keras class (a port of a port: a subclass of another port).
    """
    key = f"{module}.{name}"
    if key not in _built:
        base = base if base is not None else getattr(import_keras().callbacks, keras_name)
        _built[key] = type(name, (mixin, base), {"__module__": module, "__qualname__": name, "__doc__": mixin.__doc__})
    return _built[key]


class BoundPort(KerasCallbackBase):
    """What a port needs from the run: the Trainer and the module (set by the driver at ``setup``).

    A port standing in for a user's Keras object (``_kb_original``) copies its counters (``_kb_mirrored``)
    and model back to it at the end of training, so code inspecting that object still finds Keras's state.
    """

    _kb_trainer: Any = None
    _kb_module: Any = None
    _kb_original: Any = None
    _kb_mirrored: Tuple[str, ...] = ()

    def _kb_bind(self, trainer: Any, module: Any) -> None:
        self._kb_trainer, self._kb_module = trainer, module

    def _kb_mirror(self) -> None:
        if self._kb_original is None:
            return
        for name in self._kb_mirrored:
            setattr(self._kb_original, name, getattr(self, name))
        set_keras_callback_model(self._kb_original, self._model)  # not set_model: Keras's would need TensorFlow

    @property
    def _kb_is_writer(self) -> bool:
        return self._kb_trainer is None or bool(self._kb_trainer.is_global_zero)


def lazy_ports(module: str, mixins: Dict[str, type]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that builds each port class (mixin + its Keras namesake) on first lookup."""

    def __getattr__(name: str) -> Any:
        if name in mixins:
            return keras_subclass(name, mixins[name], name, module)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def stand_in(port: type, original: Any, **kwargs: Any) -> Any:
    """A port built with ``kwargs`` that stands in for the user's Keras callback ``original``."""
    translated = port(**kwargs)
    translated._kb_original = original
    return translated
