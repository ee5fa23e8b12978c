"""Keras learning-rate schedules evaluated without Keras, and a torch scheduler that applies them.

Keras calls a ``LearningRateSchedule`` with ``optimizer.iterations``: the number of updates already
applied, counted from 0. Update ``k`` therefore uses ``schedule(k)``; the count is global (never reset
per epoch). :func:`learning_rate_at` reproduces the six built-in schedules' float32 arithmetic
operation by operation (on CPU tensors, as the torch backend of Keras does), so the values are the
ones Keras computes. :class:`KerasScheduleLR` is the ``torch.optim.lr_scheduler`` that writes those
values into an optimizer's param groups when stepped once per optimizer step (Lightning
``interval="step"``).

Example:
    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=1.0)
    >>> sched = KerasScheduleLR(opt, lambda step: 0.5 ** step)
    >>> opt.param_groups[0]["lr"]
    1.0
    >>> opt.step(); sched.step()
    >>> opt.param_groups[0]["lr"]
    0.5
"""

from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler

from keras_bridge.typing import Schedule

__all__ = ["KerasScheduleLR", "is_schedule", "learning_rate_at"]

Tensor = torch.Tensor


def _t(value: float) -> Tensor:
    """A float32 CPU scalar, as ``ops.convert_to_tensor`` / ``ops.cast(x, "float32")`` give Keras."""
    return torch.tensor(value, dtype=torch.float32, device="cpu")


# ---- the six formulas, one float32 op per Keras op ------------------------------------------------
def _exponential_decay(cfg: Dict[str, Any], step: int) -> Tensor:
    lr0, decay_steps, decay_rate = _t(cfg["initial_learning_rate"]), _t(cfg["decay_steps"]), _t(cfg["decay_rate"])
    p = _t(step) / decay_steps
    if cfg["staircase"]:
        p = torch.floor(p)
    return lr0 * torch.pow(decay_rate, p)


def _piecewise_constant_decay(cfg: Dict[str, Any], step: int) -> Tensor:
    # Keras casts float boundaries to the (integer) step dtype, which truncates towards zero, then
    # sums indicator * value over the ranges (right-inclusive).
    bounds = [int(b) if isinstance(b, float) else b for b in cfg["boundaries"]]
    values = [np.float32(v) for v in cfg["values"]]
    result = np.float32(0.0)
    result += np.float32(step <= bounds[0]) * values[0]
    result += np.float32(step > bounds[-1]) * values[-1]
    for low, high, value in zip(bounds[:-1], bounds[1:], values[1:-1]):
        result += np.float32(low < step <= high) * value
    return _t(float(result))


def _polynomial_decay(cfg: Dict[str, Any], step: int) -> Tensor:
    lr0, end, power = _t(cfg["initial_learning_rate"]), _t(cfg["end_learning_rate"]), _t(cfg["power"])
    global_step, decay_steps = _t(step), _t(cfg["decay_steps"])
    if cfg["cycle"]:
        # The first multiple of decay_steps at or above the step (1 at step 0).
        multiplier = _t(1.0) if step == 0 else torch.ceil(global_step / cfg["decay_steps"])
        decay_steps = decay_steps * multiplier
    else:
        global_step = torch.minimum(global_step, decay_steps)
    p = global_step / decay_steps
    return (lr0 - end) * torch.pow(1 - p, power) + end


def _inverse_time_decay(cfg: Dict[str, Any], step: int) -> Tensor:
    lr0, decay_steps, decay_rate = _t(cfg["initial_learning_rate"]), _t(cfg["decay_steps"]), _t(cfg["decay_rate"])
    p = _t(step) / decay_steps
    if cfg["staircase"]:
        p = torch.floor(p)
    return lr0 / (_t(1.0) + decay_rate * p)


def _cosine(step: Tensor, decay_steps: Tensor, start: Tensor, alpha: float) -> Tensor:
    fraction = step / decay_steps
    cosine = 0.5 * (1.0 + torch.cos(_t(math.pi) * fraction))
    return start * ((1 - alpha) * cosine + alpha)


def _cosine_decay(cfg: Dict[str, Any], step: int) -> Tensor:
    lr0, decay_steps, global_step = _t(cfg["initial_learning_rate"]), _t(cfg["decay_steps"]), _t(step)
    alpha = cfg["alpha"]
    if cfg.get("warmup_target") is None:
        return _cosine(torch.minimum(global_step, decay_steps), decay_steps, lr0, alpha)
    target, warmup_steps = _t(cfg["warmup_target"]), _t(cfg.get("warmup_steps", 0))
    global_step = torch.minimum(global_step, decay_steps + warmup_steps)
    if bool(global_step < warmup_steps):
        return (target - lr0) * (global_step / warmup_steps) + lr0
    return _cosine(global_step - warmup_steps, decay_steps, target, alpha)


def _cosine_decay_restarts(cfg: Dict[str, Any], step: int) -> Tensor:
    lr0, first = _t(cfg["initial_learning_rate"]), _t(cfg["first_decay_steps"])
    alpha, t_mul, m_mul = _t(cfg["alpha"]), _t(cfg["t_mul"]), _t(cfg["m_mul"])
    fraction = _t(step) / first
    if bool(t_mul == 1.0):
        restart = torch.floor(fraction)
        fraction = fraction - restart
    else:
        # Periods grow geometrically: restart i starts at first * (1 - t_mul**i) / (1 - t_mul).
        restart = torch.floor(torch.log(1.0 - fraction * (1.0 - t_mul)) / torch.log(t_mul))
        elapsed = (1.0 - torch.pow(t_mul, restart)) / (1.0 - t_mul)
        fraction = (fraction - elapsed) / torch.pow(t_mul, restart)
    cosine = 0.5 * torch.pow(m_mul, restart) * (1.0 + torch.cos(_t(math.pi) * fraction))
    return lr0 * ((1 - alpha) * cosine + alpha)


_FORMULAS: Dict[str, Callable[[Dict[str, Any], int], Tensor]] = {
    "ExponentialDecay": _exponential_decay,
    "PiecewiseConstantDecay": _piecewise_constant_decay,
    "PolynomialDecay": _polynomial_decay,
    "InverseTimeDecay": _inverse_time_decay,
    "CosineDecay": _cosine_decay,
    "CosineDecayRestarts": _cosine_decay_restarts,
}
# The config entries that fix the dtype of Keras's arithmetic; the formulas above assume float32,
# which is what a Python float gives. Anything else (ints, float64 arrays) is left to Keras itself.
_DTYPE_KEYS = {"PiecewiseConstantDecay": "values"}


def _keras_schedules() -> Optional[Any]:
    if "keras" not in sys.modules:  # then no Keras schedule can exist
        return None
    from keras_bridge.utils.keras import import_keras

    return import_keras().optimizers.schedules


def _builtin_formula(schedule: object) -> Optional[Tuple[str, Callable[[Dict[str, Any], int], Tensor]]]:
    """``(name, formula)`` of a built-in Keras schedule, or ``None`` for anything else (custom ``__call__``)."""
    schedules = _keras_schedules()
    if schedules is None:
        return None
    for cls in type(schedule).__mro__:
        if cls.__name__ in _FORMULAS and getattr(schedules, cls.__name__, None) is cls:
            # A subclass that overrides __call__ computes something else: evaluate it instead.
            return (cls.__name__, _FORMULAS[cls.__name__]) if type(schedule).__call__ is cls.__call__ else None
    return None


def _is_float32_config(name: str, cfg: Dict[str, Any]) -> bool:
    key = _DTYPE_KEYS.get(name, "initial_learning_rate")
    values = cfg[key] if isinstance(cfg[key], (list, tuple)) else [cfg[key]]
    return all(type(v) is float for v in values)


def check_schedule(schedule: object) -> None:
    """Refuse a schedule Keras accepts but cannot mean: ``PiecewiseConstantDecay`` boundaries that do not increase.

    Keras takes the first boundary the step has not passed, so with ``boundaries=[10, 5]`` the value
    for steps 6-10 is silently the one meant for steps after 10.

    Raises:
        ValueError: naming the boundaries.

    Example:
        >>> import keras
        >>> check_schedule(keras.optimizers.schedules.PiecewiseConstantDecay([10, 5], [1.0, 0.5, 0.1]))
        Traceback (most recent call last):
        ...
        ValueError: Expected the `boundaries` of PiecewiseConstantDecay ... Received: boundaries=[10, 5]
    """
    schedules = _keras_schedules()
    if schedules is None or not isinstance(schedule, schedules.PiecewiseConstantDecay):
        return
    boundaries = [float(b) if not isinstance(b, int) else b for b in schedule.get_config()["boundaries"]]
    if any(not later > earlier for earlier, later in zip(boundaries, boundaries[1:])):
        raise ValueError(
            "Expected the `boundaries` of PiecewiseConstantDecay (an optimizer's `learning_rate`) to be strictly "
            f"increasing steps. Received: boundaries={boundaries}"
        )


def is_schedule(obj: object) -> bool:
    """True if ``obj`` is a Keras ``LearningRateSchedule`` (without importing Keras when it is not loaded)."""
    schedules = _keras_schedules()
    return schedules is not None and isinstance(obj, schedules.LearningRateSchedule)


def learning_rate_at(schedule: Any, step: int) -> float:
    """The learning rate Keras uses for optimizer update number ``step`` (0-based).

    The six built-in Keras schedules (``ExponentialDecay``, ``PiecewiseConstantDecay``,
    ``PolynomialDecay``, ``InverseTimeDecay``, ``CosineDecay`` with warmup, ``CosineDecayRestarts``) are
    evaluated from their ``get_config()`` in float32, as Keras does. Any other schedule, or any callable
    ``step -> lr``, is called and its result converted with ``float``. A plain number is returned as is.

    Args:
        schedule: a Keras ``LearningRateSchedule``, a callable ``step -> lr``, or a number.
        step: the number of optimizer updates already applied.

    Returns:
        The learning rate as a Python float.

    Raises:
        TypeError: ``schedule`` is neither a number nor callable.

    Example:
        >>> learning_rate_at(lambda step: 0.1 / (step + 1), 1)
        0.05
    """
    if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
        return float(schedule)
    builtin = _builtin_formula(schedule)
    if builtin is not None:
        name, formula = builtin
        cfg = schedule.get_config()
        if _is_float32_config(name, cfg):
            return float(formula(cfg, int(step)))
    if not callable(schedule):
        raise TypeError(
            "Expected argument `schedule` to be a Keras LearningRateSchedule, a callable `step -> lr` "
            f"or a number, but got {schedule!r} of type {type(schedule).__name__}."
        )
    return float(schedule(step))


class KerasScheduleLR(LRScheduler):
    """Sets every param group's lr to ``learning_rate_at(schedule, k)``, k = optimizer steps done so far.

    Step it once after every optimizer step (Lightning: ``"interval": "step"``). At construction the lr
    is ``schedule(0)``, after the first ``step()`` it is ``schedule(1)``, and so on, so optimizer
    update number ``k`` uses ``schedule(k)`` exactly as in Keras. ``state_dict()`` holds only the step
    count (not the schedule), so checkpoints do not pickle user callables; the schedule is the one
    given to the constructor.

    Args:
        optimizer: the optimizer whose param groups are driven (any ``torch.optim.Optimizer``).
        schedule: a Keras ``LearningRateSchedule`` or a callable ``step -> lr``.
        last_epoch: the number of optimizer steps already done, minus one; ``-1`` starts afresh.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.0)
        >>> sched = KerasScheduleLR(opt, lambda step: 0.1 * (step + 1))
        >>> lrs = []
        >>> for _ in range(3):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> [round(lr, 6) for lr in lrs]
        [0.1, 0.2, 0.3]
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1) -> None:
        if not callable(schedule):
            raise TypeError(
                "Expected argument `schedule` to be a Keras LearningRateSchedule or a callable `step -> lr`, "
                f"but got {schedule!r} of type {type(schedule).__name__}."
            )
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[Any]:
        """The learning rate of the next optimizer update, once per param group."""
        lr = learning_rate_at(self.schedule, self.last_epoch)
        return [lr for _ in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> List[Any]:
        return self.get_lr()

    def state_dict(self) -> Dict[str, Any]:
        """The scheduler state without the schedule object (see the class docstring)."""
        state = super().state_dict()
        state.pop("schedule", None)
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the step count and set the param groups' lr for it (whatever the load order).

        A ``schedule`` entry, if any, is ignored.
        """
        state = {k: v for k, v in state_dict.items() if k != "schedule"}
        super().load_state_dict(state)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs
