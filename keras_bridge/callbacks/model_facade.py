"""What a Keras callback sees as ``self.model``.

For a Keras model it is the model itself. Since Keras never compiled it, the bridge attaches what
Keras's ``compile`` would have given the callbacks: ``model.optimizer`` (an :class:`OptimizerFacade`
over the running torch optimizer: ``learning_rate`` get/set, ``iterations``), and, while ``fit``
runs, ``save`` / ``save_weights`` / ``load_weights`` that write atomically, on rank 0 only, and add the
bridge's compile state to ``.keras`` files (:mod:`keras_bridge.saving.formats`). The attributes are set with
``object.__setattr__`` so Keras's attribute tracking never sees them.

For a torch module, or a plain ``LightningModule`` (through its
:class:`~keras_bridge.callbacks.host.LoggedMetricsHost`), it is a :class:`TorchModelFacade` offering the
same: ``stop_training``, ``optimizer``, ``get_weights`` / ``set_weights``, ``save`` / ``save_weights`` /
``load_weights``; other attribute reads go to the wrapped module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
import torch

import keras_bridge.saving.formats as saving
from keras_bridge.optimizers.keras_native import KerasNativeSpec
from keras_bridge.utils.compat import attached_trainer

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule, CallbackHost

_SAVE_METHODS = ("save", "save_weights", "load_weights")


class OptimizerNotBuilt(AttributeError):
    """Raised when the optimizer is read before any fit built it (an AttributeError, so ``hasattr`` is False)."""


class OptimizerFacade:
    """``model.optimizer`` for callbacks: Keras's optimizer attributes over the running torch optimizer.

    Args:
        module: the :class:`~keras_bridge.KerasModule` (or callback host) whose Trainer owns the optimizer.

    Example:
        >>> import torch
        >>> facade = OptimizerFacade(None)
        >>> facade._last = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> facade.learning_rate  # float32, as Keras's learning-rate variable
        0.10000000149011612
    """

    def __init__(self, module: CallbackHost) -> None:
        self._module = module
        self._last: Optional[torch.optim.Optimizer] = None

    def _torch_optimizer(self) -> torch.optim.Optimizer:
        trainer = attached_trainer(self._module)
        if trainer is not None and trainer.optimizers:
            self._last = trainer.optimizers[0]
        if self._last is None:
            raise OptimizerNotBuilt("The optimizer exists once fit() has started.")
        return self._last

    @property
    def learning_rate(self) -> float:
        """The current learning rate, rounded to float32 as Keras stores it (so History values match)."""
        from keras_bridge.optimizers.base import get_learning_rate

        return float(np.float32(get_learning_rate(self._torch_optimizer())))

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        from keras_bridge.optimizers.base import set_learning_rate

        set_learning_rate(self._torch_optimizer(), float(value))

    @property
    def iterations(self) -> int:
        """The number of optimizer updates applied (Keras's ``optimizer.iterations``)."""
        optimizer = self._torch_optimizer()
        if hasattr(optimizer, "iterations"):
            return int(optimizer.iterations)
        trainer = attached_trainer(self._module)
        return int(trainer.global_step) if trainer is not None else 0

    @property
    def variables(self) -> List[Any]:
        """No Keras variables: the optimizer state is the torch optimizer's (Keras's h5 writer reads this)."""
        return []

    weights = variables

    @property
    def name(self) -> str:
        return type(self._torch_optimizer()).__name__.lower()

    def __repr__(self) -> str:
        return f"OptimizerFacade({type(self._last).__name__ if self._last is not None else 'not built'})"


class TorchModelFacade:
    """A Keras-model-like view of a :class:`~keras_bridge.KerasModule` wrapping a torch module, or of any
    ``LightningModule`` through its :class:`~keras_bridge.callbacks.host.LoggedMetricsHost`.

    Args:
        module: the ``KerasModule`` or the host: what has ``model``, ``get_weights`` / ``set_weights`` and
            the Trainer (the savers and the optimizer facade take it as the module).
    """

    def __init__(self, module: CallbackHost) -> None:
        self._module = module
        self.stop_training = False
        self.optimizer = OptimizerFacade(module)
        self.built = True

    @property
    def module(self) -> Any:
        return self._module

    def __getattr__(self, name: str) -> Any:
        # Anything else a callback reads (layers, attributes of the user's module) comes from the module.
        if name.startswith("__") or name == "_module":
            raise AttributeError(name)
        return getattr(self._module.model, name)

    def get_weights(self) -> List[np.ndarray]:
        return list(self._module.get_weights())

    def set_weights(self, weights: List[np.ndarray]) -> None:
        self._module.set_weights(weights)

    def save(self, filepath: str, overwrite: bool = True, **kwargs: object) -> None:
        """Save the module (``.keras``, ``.ckpt``); see :func:`keras_bridge.saving.formats.save_model`."""
        saving.save_model(self._module, filepath, overwrite=overwrite)

    def save_weights(self, filepath: str, overwrite: bool = True, **kwargs: object) -> None:
        """Save the weights (``.weights.h5``, ``.weights.pt`` or ``.ckpt``); see ``keras_bridge.saving``."""
        saving.save_weights(self._module, filepath, overwrite=overwrite)

    def load_weights(self, filepath: str, **kwargs: object) -> None:
        saving.load_weights(self._module, filepath)


def callback_model_for(module: BridgeModule) -> Any:
    """The object to hand to ``callback.set_model``: the Keras model, or a facade of the module."""
    if module.is_keras:
        model = module.model
        # model.optimizer is then Keras's own (a model trained with its own steps keeps its own optimizers).
        native = isinstance(module.optimizer_spec, KerasNativeSpec) or getattr(module, "keras_step", None) is not None
        if not native and not isinstance(getattr(model, "optimizer", None), OptimizerFacade):
            # Kept after fit, as Keras keeps `model.optimizer`: callbacks and users read its learning rate.
            object.__setattr__(model, "optimizer", OptimizerFacade(module))
        return model
    return TorchModelFacade(module)


def callback_model(module: BridgeModule) -> Any:
    """What Keras callbacks see as ``self.model``: the Keras model, or a Keras-like facade of a torch module.

    ``KerasModule.callback_model``; a torch module's facade is made once (``module.callback_facade``).
    """
    if module.is_keras:
        return callback_model_for(module)  # the model itself (never stored again: it is a submodule)
    if module.callback_facade is None:
        module.callback_facade = callback_model_for(module)
    return module.callback_facade


def attach_savers(module: CallbackHost) -> None:
    """Route a Keras model's ``save``/``save_weights``/``load_weights`` through the bridge while fit runs."""
    if not module.is_keras:
        return
    model = module.model
    overrides: Dict[str, Any] = {
        "save": lambda filepath, overwrite=True, **kw: saving.save_model(module, filepath, overwrite=overwrite),
        "save_weights": lambda filepath, overwrite=True, **kw: saving.save_weights(module, filepath, overwrite),
        "load_weights": lambda filepath, **kw: saving.load_weights(module, filepath),
    }
    for name, fn in overrides.items():
        object.__setattr__(model, name, fn)


def hold_saves(module: CallbackHost) -> None:
    """No save of ``module`` replaces a file until :func:`release_saves` (a NaN loss stopped training)."""
    saving.hold_saves(module)


def release_saves(module: CallbackHost) -> None:
    saving.release_saves(module)


def detach_savers(module: CallbackHost) -> None:
    """Undo :func:`attach_savers` (idempotent)."""
    if not module.is_keras:
        return
    for name in _SAVE_METHODS:
        if name in module.model.__dict__:
            object.__delattr__(module.model, name)
