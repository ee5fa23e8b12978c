"""A :class:`~keras_bridge.KerasModule`'s optimizer: one per compile, as in Keras, and Keras's weight constraints.

Keras keeps one optimizer per compile: momentum, step count and schedule position carry over from one
``fit()`` to the next. :class:`OptimizerCache` builds it from the compiled spec on first use (again only
when the set of trained parameters changes), with its Keras schedule as a per-step LR scheduler, and
keeps a learning rate set before a fit (Lightning's ``Tuner.lr_find``) until the fit configures it, and
optimizer states restored from a file until the fit starts.

Example:
    >>> import torch
    >>> from keras_bridge.optimizers.resolve import get_optimizer
    >>> cache, model = OptimizerCache(), torch.nn.Linear(2, 1)
    >>> config = cache.configure(get_optimizer("sgd"), model)
    >>> cache.configure(get_optimizer("sgd"), model) is config, type(cache.optimizer).__name__
    (True, 'SGD')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch

from keras_bridge.optimizers.base import OptimizerSpec, get_learning_rate, set_learning_rate
from keras_bridge.optimizers.keras_native import KerasNativeSpec
from keras_bridge.optimizers.schedules import KerasScheduleLR

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

__all__ = [
    "OptimizerCache",
    "apply_constraints",
    "finalize_optimizers",
    "learning_rate",
    "restore_training_state",
    "set_module_learning_rate",
]


class OptimizerCache:
    """The optimizer (or Lightning's ``{"optimizer", "lr_scheduler"}`` config) of one compile."""

    def __init__(self) -> None:
        self.key: Optional[Tuple[int, ...]] = None  # the ids of the parameters it was built for
        self.config: Any = None
        self.pending_learning_rate: Optional[float] = None
        # Optimizer/scheduler states from a file (kb.load_model, load_from_checkpoint), for the next fit's start.
        self.restored_state: Optional[Dict[str, Any]] = None

    def configure(self, spec: OptimizerSpec, model: torch.nn.Module) -> Any:
        """What ``configure_optimizers`` returns: built once per parameter set, then the same object."""
        if isinstance(spec, KerasNativeSpec):
            keras_model: Any = model
            params: List[Any] = list(keras_model.trainable_variables)
        else:
            params = [p for p in model.parameters() if p.requires_grad]
        key = tuple(id(p) for p in params)
        if self.config is None or self.key != key:
            optimizer, schedule = spec.build(params)
            config: Any = optimizer
            if schedule is not None:
                scheduler = KerasScheduleLR(optimizer, schedule)
                config = {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
            self.key, self.config = key, config
        if self.pending_learning_rate is not None:
            set_learning_rate(self.optimizer, self.pending_learning_rate)
            self.pending_learning_rate = None
        return self.config

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The built optimizer (call :meth:`configure` first)."""
        return self.config["optimizer"] if isinstance(self.config, dict) else self.config

    @property
    def scheduler(self) -> Optional[KerasScheduleLR]:
        """The built optimizer's Keras schedule, stepped per batch, or None."""
        return self.config["lr_scheduler"]["scheduler"] if isinstance(self.config, dict) else None

    def to_pickle(self) -> OptimizerCache:
        """What a pickle of the module holds instead of this cache (a launcher such as ``ddp_spawn`` sends it).

        The built optimizer steps the model's own tensors, which the copy of the model does not share: the
        module sends the optimizer's state (or :attr:`restored_state`) alongside, for the copy's next fit.
        """
        copy = OptimizerCache()
        copy.pending_learning_rate = self.pending_learning_rate
        return copy

    def states_to_send(self, built_states: Callable[[], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The states a copy of the module starts its next fit from.

        Those restored and waiting, or the built optimizer's (``built_states()``, as a file keeps them), or
        None before any fit built one.
        """
        if self.restored_state is not None:
            return self.restored_state
        return built_states() if self.config is not None else None

    def set_learning_rate(self, value: float) -> None:
        """Set the built optimizer's rate, and again when the next fit configures it.

        Lightning before 2.5 restores the optimizer's state (hence its old rate) after ``lr_find`` sets
        the suggestion.
        """
        set_learning_rate(self.optimizer, value)
        self.pending_learning_rate = float(value)


def apply_constraints(keras_model: Any) -> None:
    """Apply a Keras model's weight constraints, as a Keras optimizer does after each update."""
    for variable in keras_model.trainable_variables:
        if getattr(variable, "constraint", None) is not None:
            variable.assign(variable.constraint(variable))


def restore_training_state(module: BridgeModule, states: Dict[str, Any]) -> None:
    """Keep optimizer/LR-scheduler states (as saved in a file) to load when the next ``fit`` starts."""
    module.optimizer_cache.restored_state = dict(states)


def finalize_optimizers(optimizers: Iterable[Any]) -> None:
    """Copy EMA weights into the model when fit ends, as Keras does (``use_ema=True``)."""
    for optimizer in optimizers:
        finalize = getattr(optimizer, "finalize_variable_values", None)
        if finalize is not None:
            finalize()


def learning_rate(module: BridgeModule) -> float:
    """The compiled optimizer's learning rate, as Keras's ``model.optimizer.learning_rate``.

    Lightning's ``Tuner.lr_find`` reads it and sets its suggestion here; setting it sets the rate of
    the optimizer the next ``fit`` steps (refused with a clear error when a Keras schedule drives it).

    Example:
        >>> import torch
        >>> from keras_bridge import KerasModule
        >>> module = KerasModule(torch.nn.Linear(2, 1))
        >>> module.compile(optimizer="sgd", loss="mse")
        >>> module.learning_rate = 0.5
        >>> module.learning_rate
        0.5
    """
    module.configure_optimizers()  # built once per compile and parameter set, then cached
    return get_learning_rate(module.optimizer_cache.optimizer)


def set_module_learning_rate(module: BridgeModule, value: float) -> None:
    """Set the learning rate ``module.learning_rate`` reads (see :func:`learning_rate`)."""
    module.configure_optimizers()
    module.optimizer_cache.set_learning_rate(value)
