"""Adagrad as ``keras.optimizers.Adagrad``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import Group, GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class Adagrad(KerasOptimizer):
    """Adagrad: ``acc += g^2; v -= lr*g / sqrt(acc + epsilon)``, the accumulator starting at a constant.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        initial_accumulator_value: the starting value of the accumulators.
        epsilon: added to the accumulator before the square root.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    _state_names = ("accumulator",)

    def __init__(self, params: ParamsOrLearningRate = None, learning_rate: LearningRate = 0.001,
                 initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:  # fmt: skip
        hyper = dict(initial_accumulator_value=initial_accumulator_value, epsilon=epsilon)
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _new_state(self, name: str, p: Tensor, group: Group) -> Tensor:
        return torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    def _update(self, u: GroupUpdate) -> None:
        rules.adagrad(u.params, u.grads, u.state("accumulator"), lr=u.lr, epsilon=u.group["epsilon"])
