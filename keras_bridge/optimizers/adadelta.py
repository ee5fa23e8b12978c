"""Adadelta as ``keras.optimizers.Adadelta`` (with its learning-rate factor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class Adadelta(KerasOptimizer):
    """Adadelta with Keras's learning rate factor: ``v += lr * delta`` (Keras default ``lr=0.001``).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        rho: the decay rate of both running averages.
        epsilon: added inside both root-mean-squares.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    _state_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(
        self,
        params: ParamsOrLearningRate = None,
        learning_rate: LearningRate = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, learning_rate, dict(rho=rho, epsilon=epsilon), **kwargs)

    def _update(self, u: GroupUpdate) -> None:
        rules.adadelta(u.params, u.grads, u.state("accumulated_grad"), u.state("accumulated_delta_var"), lr=u.lr,
                   rho=u.group["rho"], epsilon=u.group["epsilon"])  # fmt: skip
