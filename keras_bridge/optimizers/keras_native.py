"""A Keras model's own Keras optimizer, stepped by Lightning.

When a Keras model is compiled with a Keras optimizer (an object, a config or a name such as
``"rmsprop"``), the bridge keeps that very object: :class:`KerasOptimizerStep` is the
``torch.optim.Optimizer`` Lightning steps, and its ``step()`` is Keras's ``optimizer.apply`` on the
model's trainable variables. So the update maths, weight constraints, ``iterations``, the learning
rate (a Keras variable, or a schedule evaluated at ``iterations``), EMA and gradient accumulation are
Keras's own, and after ``fit`` the user's optimizer object holds the trained state, as under Keras.

Example:
    >>> import keras, numpy as np, torch
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> step = KerasOptimizerStep(keras.optimizers.SGD(0.1), model.trainable_variables)
    >>> for v in model.trainable_variables:
    ...     v.value.grad = torch.ones_like(v.value)
    >>> _ = step.step()
    >>> int(step.keras_optimizer.iterations.numpy()), round(float(model.layers[0].bias.numpy()[0]), 6)
    (1, -0.1)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from keras_bridge.optimizers.base import OptimizerSpec
from keras_bridge.optimizers.fused import FusedKerasUpdate
from keras_bridge.optimizers.schedules import check_schedule
from keras_bridge.utils.compat import keras_learning_rate_setting
from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    import keras


def learning_rate_of(keras_optimizer: keras.optimizers.Optimizer) -> float:
    """The learning rate Keras's next update uses (a schedule evaluated at ``iterations``), as a float."""
    return float(np.asarray(import_keras().ops.convert_to_numpy(keras_optimizer.learning_rate)))


class KerasOptimizerStep(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` whose ``step()`` applies a Keras optimizer to a Keras model's variables.

    Keras's RMSprop, SGD and Adam (on the CPU) run the same update through
    :class:`~keras_bridge.optimizers.fused.FusedKerasUpdate` when Keras's ``apply`` would do nothing more (no
    clipping, EMA, accumulation, weight decay): the same kernels, constraints and ``iterations``, less Python
    per step.

    The param groups hold the variables' torch tensors, so ``zero_grad``, gradient clipping by Lightning
    and mixed-precision unscaling work as for any torch optimizer. A model without trainable variables
    gets a placeholder parameter (torch refuses an empty list) and ``step()`` does nothing, as Keras's
    ``train_step`` skips the update.

    ``param_groups[0]["lr"]`` *is* the Keras optimizer's learning rate (:class:`_KerasLearningRateGroup`):
    reading it gives the rate of the next update (a Keras schedule evaluated at ``iterations``), so
    Lightning's ``LearningRateMonitor`` reports Keras's rate; writing it (a torch LR scheduler, Lightning's
    ``lr_find`` or ``StochasticWeightAveraging``) sets Keras's rate, and is refused with a clear error when
    a Keras schedule drives it.

    Args:
        keras_optimizer: the Keras optimizer object (built here on ``variables`` if needed).
        variables: the model's trainable Keras variables, in order.
    """

    def __init__(self, keras_optimizer: keras.optimizers.Optimizer, variables: Sequence[Any]) -> None:
        self.keras_optimizer = keras_optimizer
        self.variables = list(variables)
        params: List[torch.Tensor] = [v.value for v in self.variables]
        if not params:
            params = [torch.nn.Parameter(torch.zeros(()))]
        elif not keras_optimizer.built:
            keras_optimizer.build(self.variables)
        super().__init__(params, {"lr": learning_rate_of(keras_optimizer)})
        self.param_groups = [_KerasLearningRateGroup(keras_optimizer, group) for group in self.param_groups]
        self._tensors = params if self.variables else []
        # Keras's RMSprop, SGD, Adam: the same update without apply's per-step Python (keras_bridge.optimizers.fused).
        self._fused = FusedKerasUpdate.for_optimizer(keras_optimizer, self.variables)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Run ``closure`` (forward and backward), then Keras's ``optimizer.apply`` with the gradients."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.variables:
            grads = [t.grad for t in self._tensors]
            if self._fused is None or not self._fused.apply(grads):
                self.keras_optimizer.apply(grads, self.variables)
        return loss

    @property
    def learning_rate(self) -> float:
        """The current learning rate (Keras's, float32 like its variable)."""
        return learning_rate_of(self.keras_optimizer)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        # Keras's own setter: it refuses a schedule-driven learning rate with Keras's message.
        self.keras_optimizer.learning_rate = value

    def finalize_variable_values(self) -> None:
        """Copy EMA weights into the model at the end of fit (Keras's ``use_ema``)."""
        if self.variables:
            self.keras_optimizer.finalize_variable_values(self.variables)

    def state_dict(self) -> Dict[str, Any]:
        """The Keras optimizer's variables (``iterations``, learning rate, slots) in Keras's order."""
        return {"keras_variables": [torch.as_tensor(v.value).detach().clone() for v in self.keras_optimizer.variables]}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Assign variables saved by :meth:`state_dict` (the optimizer must be built on the same model)."""
        values = state_dict["keras_variables"]
        variables = self.keras_optimizer.variables
        if len(values) != len(variables):
            raise ValueError(
                f"The saved optimizer state holds {len(values)} variables; this {type(self.keras_optimizer).__name__} "
                f"has {len(variables)}. Was it saved from another model or optimizer?"
            )
        for variable, value in zip(variables, values):
            variable.assign(value)


class _KerasLearningRateGroup(dict):
    """A torch param group whose ``"lr"`` entry reads and writes a Keras optimizer's learning rate.

    Read lazily (only when someone asks), so training itself makes no host synchronisation for it.
    """

    def __init__(self, keras_optimizer: keras.optimizers.Optimizer, group: Dict[str, Any]) -> None:
        super().__init__(group)
        self.keras_optimizer = keras_optimizer

    def __getitem__(self, key: str) -> Any:
        if key == "lr":
            return learning_rate_of(self.keras_optimizer)
        return super().__getitem__(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "lr":
            setting = keras_learning_rate_setting(self.keras_optimizer)
            if callable(setting):
                raise TypeError(
                    f"Something set the learning rate of the Keras {type(self.keras_optimizer).__name__} to {value!r} "
                    "(a torch LR scheduler, or Lightning's `lr_find` or `StochasticWeightAveraging`), but a Keras "
                    f"schedule ({type(setting).__name__}) drives it. Compile with a float `learning_rate` to let "
                    "Lightning's tools set it, or keep the schedule and leave the rate to it."
                )
            self.keras_optimizer.learning_rate = float(value)
        super().__setitem__(key, value)

    def __reduce__(self) -> Any:
        # Pickle (ddp_spawn) would restore the items through __setitem__ before the optimizer is known.
        return type(self), (self.keras_optimizer, dict(self))


class KerasNativeSpec(OptimizerSpec):
    """A compile-time choice of a Keras optimizer object for a Keras model: built on its variables."""

    def __init__(self, keras_optimizer: keras.optimizers.Optimizer) -> None:
        name = type(keras_optimizer).__name__
        # A partial, not a lambda: launchers that start processes (ddp_spawn) pickle the spec.
        super().__init__(name, functools.partial(KerasOptimizerStep, keras_optimizer))
        self.keras_optimizer = keras_optimizer
        check_schedule(keras_learning_rate_setting(keras_optimizer))


def keras_optimizer_for(identifier: Any) -> Optional[Any]:
    """The Keras optimizer object Keras's ``compile`` would use for ``identifier``, or None.

    Strings, config dicts, classes and objects of Keras optimizers give a Keras optimizer (as
    ``keras.optimizers.get``); anything else (torch optimizers, ``kb.optimizers`` specs) gives None.
    """
    keras = import_keras()
    base = keras.optimizers.Optimizer
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, base):
        return identifier()
    if isinstance(identifier, (str, dict)):
        try:
            optimizer = keras.optimizers.get(identifier)
        except ValueError:
            return None  # the bridge's own resolution reports it, with its accepted names
        return optimizer if isinstance(optimizer, base) else None
    return None
