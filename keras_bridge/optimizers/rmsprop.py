"""RMSprop with Keras's epsilon placement (inside the square root), as ``keras.optimizers.RMSprop``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import Group, GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class RMSprop(KerasOptimizer):
    """RMSprop as Keras computes it: ``v -= lr*g / sqrt(E[g^2] + epsilon)`` (epsilon inside the sqrt).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        rho: the discount of the moving average of squared gradients.
        momentum: momentum on the increments (0 disables it).
        epsilon: added to the averaged square before the square root.
        centered: divide by the estimated variance ``E[g^2] - E[g]^2`` instead.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    def __init__(self, params: ParamsOrLearningRate = None, learning_rate: LearningRate = 0.001,
                 rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **kwargs: Any) -> None:  # fmt: skip
        hyper = dict(rho=rho, momentum=momentum, epsilon=epsilon, centered=bool(centered))
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return (
            ("velocity",)
            + (("momentum",) if group["momentum"] > 0 else ())
            + (("average_gradient",) if group["centered"] else ())
        )

    def _update(self, u: GroupUpdate) -> None:
        rules.rmsprop(u.params, u.grads, u.state("velocity"), u.state("momentum") if u.group["momentum"] > 0 else None,
                  u.state("average_gradient") if u.group["centered"] else None, lr=u.lr, rho=u.group["rho"],
                  momentum=u.group["momentum"], epsilon=u.group["epsilon"])  # fmt: skip
