"""Nadam with Keras's momentum schedule, as ``keras.optimizers.Nadam``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class Nadam(KerasOptimizer):
    """Nadam (Adam with Nesterov momentum) with Keras's momentum schedule ``u_t = b1*(1 - 0.5*0.96**t)``.

    The running product of the ``u_t`` is kept in every param group as ``"u_product"``.

    Args:
        params: the parameters to optimize (omit them: a spec for ``compile``).
        learning_rate: a float, a Keras ``LearningRateSchedule`` or a callable ``step -> lr``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to ``sqrt(v_hat)``.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    _state_names = ("momentum", "velocity")

    def __init__(self, params: ParamsOrLearningRate = None, learning_rate: LearningRate = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:  # fmt: skip
        hyper = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, u_product=1.0)
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _begin_update(self, iteration: int) -> None:
        # Keras multiplies its single `u_product` variable once per update, gradients or not.
        for group in self.param_groups:
            group["u_product"] = rules.nadam_u_product(group["u_product"], group["beta_1"], iteration)

    def _update(self, u: GroupUpdate) -> None:
        rules.nadam(u.params, u.grads, u.state("momentum"), u.state("velocity"), lr=u.lr, beta_1=u.group["beta_1"],
                beta_2=u.group["beta_2"], epsilon=u.group["epsilon"], iteration=u.iteration,
                u_product=u.group["u_product"])  # fmt: skip
