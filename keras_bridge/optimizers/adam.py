"""Adam and AdamW with Keras's epsilon placement and bias corrections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import Group, GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class Adam(KerasOptimizer):
    """Adam with Keras's epsilon placement: ``v -= alpha*m / (sqrt(v) + epsilon)``.

    ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)`` with ``t = iterations + 1``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to ``sqrt(v)``.
        amsgrad: use the running maximum of the second moment.
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    _state_names = ("momentum", "velocity")

    def __init__(self, params: ParamsOrLearningRate = None, learning_rate: LearningRate = 0.001,
                 beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **kwargs: Any) -> None:  # fmt: skip
        hyper = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=bool(amsgrad))
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return self._state_names + (("velocity_hat",) if group["amsgrad"] else ())

    def _update(self, u: GroupUpdate) -> None:
        rules.adam(u.params, u.grads, u.state("momentum"), u.state("velocity"),
               u.state("velocity_hat") if u.group["amsgrad"] else None, lr=u.lr, beta_1=u.group["beta_1"],
               beta_2=u.group["beta_2"], epsilon=u.group["epsilon"], iteration=u.iteration)  # fmt: skip


class AdamW(Adam):
    """Adam with decoupled weight decay (``weight_decay=0.004`` by default, must not be ``None``).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        weight_decay: the decay ``v -= v * weight_decay * lr`` applied before each update.
        beta_1: as in :class:`Adam`; so are ``beta_2``, ``epsilon``, ``amsgrad`` and ``**kwargs``.
        beta_2: see :class:`Adam`.
        epsilon: see :class:`Adam`.
        amsgrad: see :class:`Adam`.
        **kwargs: see :class:`Adam`.
    """

    def __init__(
        self,
        params: ParamsOrLearningRate = None,
        learning_rate: LearningRate = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(params, learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)
