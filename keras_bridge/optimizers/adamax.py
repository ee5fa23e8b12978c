"""Adamax as ``keras.optimizers.Adamax``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class Adamax(KerasOptimizer):
    """Adamax (Adam with the infinity norm): ``v -= lr*m / ((1 - beta_1**t) * (u + epsilon))``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the exponentially weighted infinity norm.
        epsilon: added to the norm.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    _state_names = ("momentum", "norm")

    def __init__(self, params: ParamsOrLearningRate = None, learning_rate: LearningRate = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(params, learning_rate, dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon), **kwargs)

    def _update(self, u: GroupUpdate) -> None:
        rules.adamax(u.params, u.grads, u.state("momentum"), u.state("norm"), lr=u.lr, beta_1=u.group["beta_1"],
                 beta_2=u.group["beta_2"], epsilon=u.group["epsilon"], iteration=u.iteration)  # fmt: skip
