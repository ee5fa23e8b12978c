"""SGD with (Nesterov) momentum, as ``keras.optimizers.SGD``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Tuple

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.base import Group, GroupUpdate, KerasOptimizer
from keras_bridge.typing import LearningRate

if TYPE_CHECKING:
    from keras_bridge.optimizers.base import ParamsOrLearningRate

Tensor = torch.Tensor


class SGD(KerasOptimizer):
    """Gradient descent with optional (Nesterov) momentum: ``m = momentum*m - lr*g; v += m``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        momentum: float in ``[0, 1]``.
        nesterov: use Nesterov momentum (``v += momentum*m - lr*g``).
        **kwargs: Keras's common optimizer arguments (``weight_decay``, ``clipnorm``, ...), see
            :class:`~keras_bridge.optimizers.base.KerasOptimizer`.
    """

    def __init__(
        self,
        params: ParamsOrLearningRate = None,
        learning_rate: LearningRate = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        **kwargs: Any,
    ) -> None:
        if not 0 <= momentum <= 1:
            raise ValueError(f"`momentum` must be a float between [0, 1]. Received: momentum={momentum}")
        super().__init__(params, learning_rate, dict(momentum=float(momentum), nesterov=bool(nesterov)), **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return ("momentum",) if group["momentum"] != 0 else ()

    def _update(self, u: GroupUpdate) -> None:
        momentums = u.state("momentum") if u.group["momentum"] != 0 else None
        rules.sgd(u.params, u.grads, momentums, lr=u.lr, momentum=u.group["momentum"], nesterov=u.group["nesterov"])
