"""Torch optimizers with Keras 3's update maths and defaults, and the ``optimizer=`` argument of compile.

Each class is a ``torch.optim.Optimizer`` whose updates equal Keras's (same formulas, same float32
rounding of the scalars, Keras's step count ``iterations`` starting at 0 and bias corrections at
``iterations + 1``). The constructor arguments are Keras's, including ``weight_decay``, ``clipnorm``,
``clipvalue``, ``global_clipnorm``, ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency`` and
``gradient_accumulation_steps``.

Two ways to call a class:

* with parameters first, as any torch optimizer: ``Adam(model.parameters(), learning_rate=1e-3)``;
* Keras style, without parameters (the first positional argument is then the learning rate):
  ``Adam(1e-3)`` returns an :class:`OptimizerSpec` for ``compile``, built when the parameters exist.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = SGD([w], learning_rate=0.1)
    >>> w.grad = torch.ones(2); opt.step()
    >>> [round(v, 6) for v in w.tolist()], opt.iterations
    ([0.9, 0.9], 1)
    >>> spec = Adam(1e-3)
    >>> spec.name
    'Adam'
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from keras_bridge import _optim_math as M
from keras_bridge._optim_base import KerasOptimizer, OptimizerSpec

__all__ = [
    "SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Nadam",
    "KerasOptimizer", "OptimizerSpec", "from_torch", "get_learning_rate", "get_optimizer", "set_learning_rate",
]

Tensor = torch.Tensor
Group = Dict[str, Any]


def _states(states: List[Dict[str, Any]], name: str) -> List[Tensor]:
    return [s[name] for s in states]


class SGD(KerasOptimizer):
    """Gradient descent with optional (Nesterov) momentum: ``m = momentum*m - lr*g; v += m``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        momentum: float in ``[0, 1]``.
        nesterov: use Nesterov momentum (``v += momentum*m - lr*g``).
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    def __init__(self, params: Any, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 **kwargs: Any) -> None:
        if not 0 <= momentum <= 1:
            raise ValueError(f"`momentum` must be a float between [0, 1]. Received: momentum={momentum}")
        super().__init__(params, learning_rate, dict(momentum=float(momentum), nesterov=bool(nesterov)), **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return ("momentum",) if group["momentum"] != 0 else ()

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        momentums = _states(states, "momentum") if group["momentum"] != 0 else None
        M.sgd(params, grads, momentums, lr=lr, momentum=group["momentum"], nesterov=group["nesterov"])


class RMSprop(KerasOptimizer):
    """RMSprop as Keras computes it: ``v -= lr*g / sqrt(E[g^2] + epsilon)`` (epsilon inside the sqrt).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        rho: the discount of the moving average of squared gradients.
        momentum: momentum on the increments (0 disables it).
        epsilon: added to the averaged square before the square root.
        centered: divide by the estimated variance ``E[g^2] - E[g]^2`` instead.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    def __init__(self, params: Any, learning_rate: Any = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, **kwargs: Any) -> None:
        hyper = dict(rho=rho, momentum=momentum, epsilon=epsilon, centered=bool(centered))
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return ("velocity",) + (("momentum",) if group["momentum"] > 0 else ()) + (
            ("average_gradient",) if group["centered"] else ())

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.rmsprop(params, grads, _states(states, "velocity"),
                  _states(states, "momentum") if group["momentum"] > 0 else None,
                  _states(states, "average_gradient") if group["centered"] else None,
                  lr=lr, rho=group["rho"], momentum=group["momentum"], epsilon=group["epsilon"])


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
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    _state_names = ("momentum", "velocity")

    def __init__(self, params: Any, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, **kwargs: Any) -> None:
        hyper = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=bool(amsgrad))
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _state_names_for(self, group: Group) -> Tuple[str, ...]:
        return self._state_names + (("velocity_hat",) if group["amsgrad"] else ())

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.adam(params, grads, _states(states, "momentum"), _states(states, "velocity"),
               _states(states, "velocity_hat") if group["amsgrad"] else None,
               lr=lr, beta_1=group["beta_1"], beta_2=group["beta_2"], epsilon=group["epsilon"], iteration=iteration)


class AdamW(Adam):
    """Adam with decoupled weight decay (``weight_decay=0.004`` by default, must not be ``None``).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        weight_decay: the decay ``v -= v * weight_decay * lr`` applied before each update.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to ``sqrt(v)``.
        amsgrad: use the running maximum of the second moment.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    def __init__(self, params: Any, learning_rate: Any = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False, **kwargs: Any) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(params, learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay,
                         **kwargs)


class Adagrad(KerasOptimizer):
    """Adagrad: ``acc += g^2; v -= lr*g / sqrt(acc + epsilon)``, the accumulator starting at a constant.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        initial_accumulator_value: the starting value of the accumulators.
        epsilon: added to the accumulator before the square root.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    _state_names = ("accumulator",)

    def __init__(self, params: Any, learning_rate: Any = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:
        hyper = dict(initial_accumulator_value=initial_accumulator_value, epsilon=epsilon)
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _new_state(self, name: str, p: Tensor, group: Group) -> Tensor:
        return torch.full_like(p, group["initial_accumulator_value"], memory_format=torch.preserve_format)

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.adagrad(params, grads, _states(states, "accumulator"), lr=lr, epsilon=group["epsilon"])


class Adadelta(KerasOptimizer):
    """Adadelta with Keras's learning rate factor: ``v += lr * delta`` (Keras default ``lr=0.001``).

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        rho: the decay rate of both running averages.
        epsilon: added inside both root-mean-squares.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    _state_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, params: Any, learning_rate: Any = 0.001, rho: float = 0.95, epsilon: float = 1e-7,
                 **kwargs: Any) -> None:
        super().__init__(params, learning_rate, dict(rho=rho, epsilon=epsilon), **kwargs)

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.adadelta(params, grads, _states(states, "accumulated_grad"), _states(states, "accumulated_delta_var"),
                   lr=lr, rho=group["rho"], epsilon=group["epsilon"])


class Adamax(KerasOptimizer):
    """Adamax (Adam with the infinity norm): ``v -= lr*m / ((1 - beta_1**t) * (u + epsilon))``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the exponentially weighted infinity norm.
        epsilon: added to the norm.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    _state_names = ("momentum", "norm")

    def __init__(self, params: Any, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:
        super().__init__(params, learning_rate, dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon), **kwargs)

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.adamax(params, grads, _states(states, "momentum"), _states(states, "norm"), lr=lr,
                 beta_1=group["beta_1"], beta_2=group["beta_2"], epsilon=group["epsilon"], iteration=iteration)


class Nadam(KerasOptimizer):
    """Nadam (Adam with Nesterov momentum) with Keras's momentum schedule ``u_t = b1*(1 - 0.5*0.96**t)``.

    The running product of the ``u_t`` is kept in every param group as ``"u_product"``.

    Args:
        params: the parameters to optimize (omit them to get a spec for ``compile``).
        learning_rate: float, Keras ``LearningRateSchedule`` or callable ``step -> lr``.
        beta_1: decay of the first-moment estimate.
        beta_2: decay of the second-moment estimate.
        epsilon: added to ``sqrt(v_hat)``.
        **kwargs: Keras's common arguments ``weight_decay``, ``clipnorm``, ``clipvalue``, ``global_clipnorm``,
            ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency``, ``gradient_accumulation_steps``,
            ``name``; see :class:`KerasOptimizer`.
    """

    _state_names = ("momentum", "velocity")

    def __init__(self, params: Any, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, **kwargs: Any) -> None:
        hyper = dict(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, u_product=1.0)
        super().__init__(params, learning_rate, hyper, **kwargs)

    def _begin_update(self, iteration: int) -> None:
        # Keras multiplies its single `u_product` variable once per update, gradients or not.
        for group in self.param_groups:
            group["u_product"] = M.nadam_u_product(group["u_product"], group["beta_1"], iteration)

    def _update(self, group: Group, params: List[Tensor], grads: List[Tensor], states: List[Dict[str, Any]],
                lr: Any, iteration: int) -> None:
        M.nadam(params, grads, _states(states, "momentum"), _states(states, "velocity"), lr=lr,
                beta_1=group["beta_1"], beta_2=group["beta_2"], epsilon=group["epsilon"], iteration=iteration,
                u_product=group["u_product"])


from keras_bridge._optim_resolve import (  # noqa: E402  (needs the classes above)
    from_torch,
    get_learning_rate,
    get_optimizer,
    set_learning_rate,
)
