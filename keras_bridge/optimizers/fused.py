"""Keras's ``optimizer.apply`` for Keras's own RMSprop, SGD and Adam, without its per-step Python bookkeeping.

Keras's ``apply`` on the torch backend spends more time in Python than in its update kernels for a small
model: a name scope, a pass over the gradients to drop missing ones, one for variables that take
their gradient as their value, the learning rate cast, and in the update itself a Keras
``Variable.value`` lookup and an index lookup per model variable and per slot. :class:`FusedKerasUpdate`
resolves the torch tensors of the model variables and of the optimizer's slots once, then runs per step:

1. the same multi-tensor kernels as Keras's torch backend, in the same order, with the same scalars
   (:func:`keras_bridge.optimizers.functional.rmsprop` / ``sgd`` / ``adam``), on the learning rate Keras would use
   (``optimizer.learning_rate``: the variable, or the schedule evaluated at ``iterations``), cast to the
   variables' dtype as Keras casts it;
2. each variable's ``constraint``, as Keras applies it after the update;
3. ``iterations`` + 1.

So the weights, the slots, ``iterations`` and the learning rate are bit for bit Keras's. Whatever this
path does not cover runs Keras's own ``apply`` for that step, decided before each step from the
optimizer's current settings: another optimizer class (or a subclass of Keras's), Adam on another device
than the CPU (Keras computes its bias corrections on the variables' device, the shared rule on the CPU), gradient
accumulation, EMA, clipping (``clipnorm``, ``global_clipnorm``, ``clipvalue``), weight decay, a loss
scale factor, a variable without a gradient or one that takes its gradient as its value (float8).

Example:
    >>> import keras, torch
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> optimizer = keras.optimizers.SGD(0.1)
    >>> optimizer.build(model.trainable_variables)
    >>> fused = FusedKerasUpdate.for_optimizer(optimizer, model.trainable_variables)
    >>> fused.apply([torch.ones_like(v.value) for v in model.trainable_variables])
    True
    >>> int(optimizer.iterations.numpy()), round(float(model.layers[0].bias.numpy()[0]), 6)
    (1, -0.1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.utils.compat import keras_optimizer_slots, keras_update_rule

if TYPE_CHECKING:
    import keras

__all__ = ["FusedKerasUpdate"]

Tensor = torch.Tensor

# The optimizer settings under which Keras's apply does more than the update rule: any of them set
# (to anything Keras treats as on) sends the step to Keras's own apply.
_OFF_WHEN_SET = ("gradient_accumulation_steps", "use_ema", "clipnorm", "global_clipnorm", "clipvalue")
# Each rule's slot lists in the Keras optimizer, one slot variable per model variable.
_SLOTS = {
    "rmsprop": ("_velocities", "_momentums", "_average_gradients"),
    "sgd": ("momentums",),
    "adam": ("_momentums", "_velocities", "_velocity_hats"),
}


class FusedKerasUpdate:
    """One Keras ``optimizer.apply(grads, variables)`` for Keras's RMSprop, SGD and Adam (see the module docstring).

    Build it with :meth:`for_optimizer` (None when the optimizer is not covered); :meth:`apply` returns
    False, having done nothing, when this step must run Keras's own ``apply``.
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable], rule: str) -> None:
        self.optimizer = optimizer
        self.variables = list(variables)
        self.rule = rule
        self.params: List[Tensor] = [v.value for v in self.variables]
        self.iterations = optimizer.iterations
        self._counter: Tensor = self.iterations.value
        self.slot_names = _SLOTS[rule]
        self._slots = {name: keras_optimizer_slots(optimizer, name, self.variables) for name in self.slot_names}

    @classmethod
    def for_optimizer(
        cls, optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable]
    ) -> Optional[FusedKerasUpdate]:
        """The fused update of a built Keras optimizer on ``variables``, or None when it is not covered."""
        rule = keras_update_rule(optimizer)
        variables = list(variables)
        if rule is None or not variables or not getattr(optimizer, "built", False):
            return None
        if any(getattr(v, "overwrite_with_gradient", False) for v in variables):
            return None
        if rule == "adam" and any(v.value.device.type != "cpu" for v in variables):
            return None
        return cls(optimizer, variables, rule)

    def covers_this_step(self, grads: Sequence[Optional[Tensor]]) -> bool:
        """Whether Keras's ``apply`` would do exactly the rule, the constraints and the count for these gradients."""
        optimizer = self.optimizer
        if any(getattr(optimizer, name, None) for name in _OFF_WHEN_SET):
            return False
        if getattr(optimizer, "weight_decay", None) is not None or getattr(optimizer, "loss_scale_factor", None):
            return False
        if optimizer.iterations is not self.iterations or any(g is None for g in grads):
            return False
        if self.rule == "rmsprop":
            return self._slots["_velocities"] is not None and (
                (optimizer.momentum <= 0 or self._slots["_momentums"] is not None)
                and (not optimizer.centered or self._slots["_average_gradients"] is not None)
            )
        if self.rule == "adam":
            return (self._slots["_momentums"] is not None and self._slots["_velocities"] is not None) and (
                not optimizer.amsgrad or self._slots["_velocity_hats"] is not None
            )
        return optimizer.momentum == 0 or self._slots["momentums"] is not None

    @torch.no_grad()
    def apply(self, grads: Sequence[Optional[Tensor]]) -> bool:
        """Apply ``grads`` (one per variable, in order) as Keras's ``apply`` would; False if the step is not covered."""
        if not self.covers_this_step(grads):
            return False
        optimizer = self.optimizer
        given: List[Tensor] = list(grads)  # type: ignore[arg-type]  # none is None (checked above)
        lr = self._learning_rate()
        if self.rule == "rmsprop":
            rules.rmsprop(
                self.params, given, self._slots["_velocities"],  # type: ignore[arg-type]
                self._slots["_momentums"] if optimizer.momentum > 0 else None,
                self._slots["_average_gradients"] if optimizer.centered else None,
                lr=lr, rho=optimizer.rho, momentum=optimizer.momentum, epsilon=optimizer.epsilon,
            )  # fmt: skip
        elif self.rule == "adam":
            rules.adam(
                self.params, given, self._slots["_momentums"], self._slots["_velocities"],  # type: ignore[arg-type]
                self._slots["_velocity_hats"] if optimizer.amsgrad else None, lr=lr, beta_1=optimizer.beta_1,
                beta_2=optimizer.beta_2, epsilon=optimizer.epsilon, iteration=int(self._counter),
            )  # fmt: skip
        else:
            momentums = self._slots["momentums"] if optimizer.momentum != 0 else None
            rules.sgd(self.params, given, momentums, lr=lr, momentum=optimizer.momentum, nesterov=optimizer.nesterov)
        for variable in self.variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
        self._counter.add_(1)  # Keras's `iterations.assign_add(1)`: the same in-place write
        return True

    def _learning_rate(self) -> Tensor:
        """The rate Keras's update reads (``optimizer.learning_rate``), cast to the variables' dtype as Keras does."""
        rate = self.optimizer.learning_rate
        value = getattr(rate, "value", rate)  # a Keras variable's tensor
        dtype = self.params[0].dtype
        if isinstance(value, Tensor):
            return value.detach().to(dtype)
        return torch.tensor(value, dtype=dtype, device=self.params[0].device)
