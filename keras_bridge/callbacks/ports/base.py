"""Keras subclasses built on first use, so that importing ``keras_bridge`` does not import keras.

A port is written as a plain mixin class (importable without keras); :func:`keras_subclass` puts it
in front of the Keras class it replaces, once, when the name is first looked up through the module's
``__getattr__``. The result is a real subclass: ``isinstance(cb, keras.callbacks.ModelCheckpoint)``
holds, and Keras's own methods run wherever the port does not override them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from keras_bridge.utils.compat import set_keras_callback_model
from keras_bridge.utils.keras import import_keras

_built: Dict[str, type] = {}

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from keras_bridge.protocols import CallbackHost

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


class Port(KerasCallbackBase):
    """The protocol between the callback driver and a port: every ``_kb_*`` hook, each a no-op by default.

    The driver calls these on every callback that is a ``Port`` (and on no other), so a port overrides
    only the hooks it needs. In the order of a fit:

    * ``_kb_bind(trainer, module)``: at ``setup``, the Lightning Trainer and the module being trained.
    * ``_kb_on_fit_start()``: after the optimizers exist, before the fit loop starts (restore loop state).
    * ``_kb_resumed_epoch`` / ``_kb_resumed_mid_epoch``: read after ``on_train_begin``; the epoch a restored
      backup continues (the driver drops what was logged from it on), and whether it resumes inside it.
    * ``_kb_reapply_training_state()``: after the callbacks saw a mid-epoch resumed epoch begin.
    * ``_kb_mark_start(epoch)``: the epoch this fit starts at, after any resume.
    * ``_kb_batch_logs``: whether its batch hooks need batch logs (``None``: decided from the hooks it overrides).
    * ``_kb_save_for_preemption(at_epoch_end)``: on an agreed SIGTERM; what it saved, in words, or ``None``.
    * ``_kb_mirror()``: at the end of training (or on an exception), copy state back to the user's Keras object.

    Example:
        >>> class _Quiet(Port):
        ...     def _kb_mark_start(self, epoch):
        ...         print("fit starts at epoch", epoch)
        >>> _Quiet()._kb_mark_start(2)
        fit starts at epoch 2
        >>> _Quiet()._kb_save_for_preemption(at_epoch_end=True) is None
        True
    """

    _kb_resumed_epoch: Optional[int] = None
    _kb_resumed_mid_epoch: bool = False

    @property
    def _kb_batch_logs(self) -> Optional[bool]:
        """Whether the batch hooks need batch logs; ``None``: as for any callback (the hooks it overrides)."""
        return None

    def _kb_bind(self, trainer: pl.Trainer, module: CallbackHost) -> None:
        """Receive the Trainer and the module (at ``setup``)."""

    def _kb_on_fit_start(self) -> None:
        """Restore what must be restored before the fit loop starts."""

    def _kb_reapply_training_state(self) -> None:
        """Apply restored optimizer state again after a mid-epoch resume's epoch-begin hooks."""

    def _kb_mark_start(self, epoch: int) -> None:
        """Learn the epoch this fit starts at."""

    def _kb_save_for_preemption(self, at_epoch_end: bool) -> Optional[str]:
        """Save what a preempted run needs to resume; the message to print, or ``None`` for nothing saved."""
        return None

    def _kb_mirror(self) -> None:
        """Copy state back to the user's Keras object this port stands in for."""


class BoundPort(Port):
    """A port that keeps the Trainer and the module (set by the driver at ``setup``).

    A port standing in for a user's Keras object (``_kb_original``) copies its counters (``_kb_mirrored``)
    and model back to it at the end of training, so code inspecting that object still finds Keras's state.
    """

    _kb_trainer: Any = None
    _kb_module: Any = None
    _kb_original: Any = None
    _kb_mirrored: Tuple[str, ...] = ()

    def _kb_bind(self, trainer: pl.Trainer, module: CallbackHost) -> None:
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
