"""The machinery shared by :mod:`keras_bridge.optimizers`: Keras's ``BaseOptimizer.apply`` on torch.

One ``step()`` is one Keras ``apply``: gradient accumulation, clipping (``clipnorm`` per tensor,
``global_clipnorm`` over all, ``clipvalue``), decoupled weight decay ``v *= 1 - wd*lr``, the update rule,
then the EMA of the weights, and the ``iterations`` counter goes up by one. The counter lives in every
param group (``group["iterations"]``, equal across groups) so that ``state_dict()`` carries it.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union, cast

import torch

import keras_bridge.optimizers.functional as rules
from keras_bridge.optimizers.schedules import check_schedule, is_schedule, learning_rate_at
from keras_bridge.typing import LearningRate
from keras_bridge.utils.compat import foreach

if TYPE_CHECKING:
    from torch.optim.optimizer import ParamsT

    #: An optimizer's first argument: its parameters, or (Keras style, for a spec to ``compile``) the learning
    #: rate or nothing. The metaclass tells them apart at the call, before ``__init__`` runs.
    ParamsOrLearningRate = Union[ParamsT, LearningRate, None]

Tensor = torch.Tensor
Group = Dict[str, Any]


@dataclass
class OptimizerSpec:
    """A compile-time optimizer choice, turned into a torch optimizer once the parameters are known.

    Args:
        name: a readable name for messages, e.g. ``"rmsprop"``, ``"Adam"``, ``"torch.optim.SGD"``.
        factory: ``params -> torch.optim.Optimizer``.
        schedule: a Keras ``LearningRateSchedule`` or callable ``step -> lr`` that drives the lr; when
            ``None``, the built optimizer's ``keras_schedule`` attribute (if any) is used.

    Example:
        >>> import functools, torch
        >>> spec = OptimizerSpec("sgd", functools.partial(torch.optim.SGD, lr=0.1))
        >>> opt, schedule = spec.build([torch.zeros(2, requires_grad=True)])
        >>> type(opt).__name__, schedule
        ('SGD', None)
    """

    name: str
    factory: Callable[[Any], torch.optim.Optimizer] = field(repr=False)
    schedule: Optional[Any] = None

    def __post_init__(self) -> None:
        check_schedule(self.schedule)

    def build(self, params: ParamsT) -> Tuple[torch.optim.Optimizer, Optional[Any]]:
        """Return ``(optimizer, schedule_or_None)``; drive a schedule with ``KerasScheduleLR``.

        Args:
            params: the parameters (or param-group dicts) to optimize.

        Raises:
            TypeError: the factory did not return a ``torch.optim.Optimizer``.
        """
        optimizer = self.factory(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"The `optimizer` factory {self.name} should return a torch.optim.Optimizer when called "
                f"with the parameters, but returned {optimizer!r} of type {type(optimizer).__name__}."
            )
        schedule = self.schedule if self.schedule is not None else getattr(optimizer, "keras_schedule", None)
        return optimizer, schedule


class _KerasClassFactory:
    """``params -> cls(params, *args, **kwargs)``; a class rather than a closure so specs pickle."""

    def __init__(self, cls: type, args: tuple, kwargs: Dict[str, Any]) -> None:
        self.cls, self.args, self.kwargs = cls, args, kwargs

    def __call__(self, params: ParamsT) -> torch.optim.Optimizer:
        return self.cls(params, *self.args, **self.kwargs)


def _is_lr_like(obj: object) -> bool:
    if isinstance(obj, numbers.Real) and not isinstance(obj, bool):
        return True
    if isinstance(obj, (torch.Tensor, torch.nn.Module)) or hasattr(obj, "__iter__"):
        return False
    return is_schedule(obj) or callable(obj)


class _ConfigWithoutParams(type):
    """Metaclass: calling an optimizer class without parameters gives an :class:`OptimizerSpec`.

    ``Adam(model.parameters(), learning_rate=1e-3)`` builds a torch optimizer; ``Adam(1e-3)`` or
    ``Adam(learning_rate=1e-3)`` (Keras style: the first positional argument is the learning rate) or
    ``Adam(None, ...)`` returns a spec for ``compile``. The arguments are checked at once on a throw-away parameter.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if args and args[0] is None:  # explicit `params=None`, positionally or by name
            args = args[1:]
        elif "params" in kwargs and kwargs["params"] is None:
            kwargs = {k: v for k, v in kwargs.items() if k != "params"}
        if "params" in kwargs or (args and not _is_lr_like(args[0])):
            return super().__call__(*args, **kwargs)
        super().__call__([torch.zeros(1, requires_grad=True)], *args, **kwargs)  # validates the arguments
        return OptimizerSpec(cls.__name__, _KerasClassFactory(cls, args, kwargs))


@dataclass
class GroupUpdate:
    """One param group's share of an optimizer update: what a rule's ``_update`` reads."""

    group: Group
    params: List[Tensor]
    grads: List[Tensor]
    states: List[Dict[str, Any]]
    lr: Any
    iteration: int

    def state(self, name: str) -> List[Tensor]:
        """The state tensor ``name`` of every parameter, in parameter order."""
        return [s[name] for s in self.states]


class KerasOptimizer(torch.optim.Optimizer, metaclass=_ConfigWithoutParams):
    """Base class of the Keras-exact optimizers; subclasses set ``_state_names`` and ``_update``.

    Args:
        params: the parameters or param-group dicts, as for any torch optimizer.
        learning_rate: a float, a Keras ``LearningRateSchedule`` or a callable ``step -> lr``. A schedule
            is not evaluated by the optimizer: it is kept in ``keras_schedule`` and the param groups get
            ``schedule(0)``; attach :class:`keras_bridge.optimizers.schedules.KerasScheduleLR` to step it.
        hyper: the update rule's own hyperparameters, stored in every param group.
        weight_decay: decoupled decay ``v -= v * weight_decay * lr`` before each update (``None``: off).
        clipnorm: clip each gradient tensor to this L2 norm.
        clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
        global_clipnorm: clip all gradients together to this global L2 norm.
        use_ema: keep an exponential moving average of the weights (in the state as ``"average"``).
        ema_momentum: the EMA momentum.
        ema_overwrite_frequency: every this many iterations, copy the average into the weights.
        loss_scale_factor: not supported (``ValueError``); use Lightning mixed precision instead.
        gradient_accumulation_steps: update only every this many steps, with the mean gradient.
        name: a name, kept for Keras compatibility.

    Hyperparameters (``lr``, ``weight_decay``, clipping and the rule's own) are stored per param group
    and read at every step, so torch/Lightning LR schedulers and callbacks that set ``group["lr"]``
    work. ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency`` and ``gradient_accumulation_steps``
    apply to the whole optimizer, as in Keras.
    """

    _state_names: Tuple[str, ...] = ()

    def __init__(
        self,
        params: ParamsOrLearningRate,
        learning_rate: LearningRate,
        hyper: Dict[str, Any],
        *,
        weight_decay: Optional[float] = None,
        clipnorm: Optional[float] = None,
        clipvalue: Optional[float] = None,
        global_clipnorm: Optional[float] = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: Optional[int] = None,
        loss_scale_factor: Optional[float] = None,
        gradient_accumulation_steps: Optional[int] = None,
        name: Optional[str] = None,
        **extra: Any,
    ) -> None:
        _check_extra(extra)
        if isinstance(params, torch.nn.Module):
            raise TypeError(
                f"{type(self).__name__} expects parameters, e.g. `model.parameters()`, but got the module "
                f"{type(params).__name__} itself."
            )
        _check_common(
            clipnorm,
            clipvalue,
            global_clipnorm,
            use_ema,
            ema_momentum,
            ema_overwrite_frequency,
            loss_scale_factor,
            gradient_accumulation_steps,
        )
        self.keras_schedule: Optional[Any] = None
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
            lr = float(learning_rate)
        elif is_schedule(learning_rate) or callable(learning_rate):
            self.keras_schedule = learning_rate
            lr = learning_rate_at(learning_rate, 0)
        else:
            raise ValueError(
                "Argument `learning_rate` should be a float, a Keras LearningRateSchedule or a callable "
                f"`step -> lr`. Received: learning_rate={learning_rate!r}"
            )
        self.name = name or type(self).__name__.lower()
        self.use_ema, self.ema_momentum = bool(use_ema), ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.gradient_accumulation_steps = gradient_accumulation_steps
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            iterations=0,
            **hyper,
        )
        super().__init__(cast("ParamsT", params), defaults)  # parameters: the metaclass routed the rest

    # ---- Keras-style attributes ----------------------------------------------------------------
    @property
    def iterations(self) -> int:
        """The number of ``step()`` calls that had gradients (Keras's ``optimizer._iterations``).

        With ``gradient_accumulation_steps=n``, Keras's ``optimizer.iterations`` is this count ``// n``.
        """
        return self.param_groups[0]["iterations"]

    @property
    def learning_rate(self) -> float:
        """The current learning rate of the first param group."""
        return float(self.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        set_learning_rate(self, value)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """As in torch; ``"learning_rate"`` is accepted for ``"lr"``, and the step counter is shared."""
        if "learning_rate" in param_group:
            param_group = dict(param_group)
            param_group["lr"] = param_group.pop("learning_rate")
        super().add_param_group(param_group)
        if len(self.param_groups) > 1:
            for key in ("iterations", "u_product"):
                if key in self.param_groups[0]:
                    self.param_groups[-1][key] = self.param_groups[0][key]

    # ---- one Keras `apply` ---------------------------------------------------------------------
    def _state_names_for(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        return self._state_names

    def _new_state(self, name: str, p: Tensor, group: Dict[str, Any]) -> Tensor:
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _states(self, group: Dict[str, Any], params: List[Tensor]) -> List[Dict[str, Any]]:
        names = self._state_names_for(group)
        states = []
        for p in params:
            state = self.state[p]
            for name in names:
                if name not in state:
                    state[name] = self._new_state(name, p, group)
            states.append(state)
        return states

    def _begin_update(self, iteration: int) -> None:
        """Called once per update, before the param groups are updated."""

    def _update(self, update: GroupUpdate) -> None:
        """Apply one Keras update rule to one param group (each rule's own file)."""
        raise NotImplementedError

    def _accumulate(self, work: List[Tuple[Dict[str, Any], List[Tensor], List[Tensor]]], update_now: bool) -> None:
        steps = self.gradient_accumulation_steps
        for i, (group, params, grads) in enumerate(work):
            accs = []
            for p in params:
                if "gradient_accumulator" not in self.state[p]:
                    self.state[p]["gradient_accumulator"] = torch.zeros_like(p)
                accs.append(self.state[p]["gradient_accumulator"])
            if not params:
                continue
            if update_now:
                mean = foreach.add(grads, accs)
                foreach.div_(mean, float(steps or 1))
                work[i] = (group, params, list(mean))
            else:
                foreach.add_(accs, grads)
        if update_now:  # Keras resets every accumulator, also those of tensors without a gradient now
            for group in self.param_groups:
                for p in group["params"]:
                    if "gradient_accumulator" in self.state.get(p, {}):
                        self.state[p]["gradient_accumulator"].zero_()

    @staticmethod
    def _clip(work: List[Tuple[Dict[str, Any], List[Tensor], List[Tensor]]]) -> None:
        norm = None
        if any(g["global_clipnorm"] and not g["clipnorm"] for g, _, grads in work if grads):
            norm = rules.global_norm([t for _, _, grads in work for t in grads])
        for i, (group, params, grads) in enumerate(work):
            if not grads:
                continue
            if group["clipnorm"] and group["clipnorm"] > 0:
                grads = rules.clip_by_norm(grads, group["clipnorm"])
            elif group["global_clipnorm"] and group["global_clipnorm"] > 0:
                assert norm is not None  # computed above for every group that clips by the global norm
                grads = rules.clip_by_global_norm(grads, group["global_clipnorm"], norm)
            elif group["clipvalue"] and group["clipvalue"] > 0:
                grads = rules.clip_by_value(grads, group["clipvalue"])
            work[i] = (group, params, grads)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """Apply the gradients in ``p.grad`` (one Keras ``optimizer.apply``); a no-op if there are none.

        Args:
            closure: re-evaluates the model and returns the loss (optional, as in torch).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")
            work.append((group, params, [p.grad for p in params]))
        if not any(params for _, params, _ in work):
            return loss
        count = self.param_groups[0]["iterations"]
        accumulation = self.gradient_accumulation_steps
        update_now = not accumulation or (count + 1) % accumulation == 0
        iteration = count // accumulation if accumulation else count  # Keras's `optimizer.iterations`
        if accumulation:
            self._accumulate(work, update_now)
        if update_now:
            self._begin_update(iteration)
            self._clip(work)
            for group, params, grads in work:
                if not params:
                    continue
                lr = rules.f32(group["lr"])
                if group["weight_decay"]:
                    rules.decay_weights(params, lr, group["weight_decay"])
                self._update(GroupUpdate(group, params, grads, self._states(group, params), lr, iteration))
        if self.use_ema:
            self._update_ema(iteration)
        for group in self.param_groups:
            group["iterations"] = count + 1
        return loss

    # ---- exponential moving average of the weights ------------------------------------------------
    def _all_params(self) -> Iterable[Tensor]:
        return (p for group in self.param_groups for p in group["params"])

    def _update_ema(self, iteration: int) -> None:
        params = list(self._all_params())
        averages = []
        for p in params:
            if "average" not in self.state[p]:
                self.state[p]["average"] = p.detach().clone()
            averages.append(self.state[p]["average"])
        rules.ema_update(averages, params, self.ema_momentum, iteration)
        if self.ema_overwrite_frequency and (iteration + 1) % self.ema_overwrite_frequency == 0:
            foreach.copy_(params, averages)

    @torch.no_grad()
    def finalize_variable_values(self) -> None:
        """With ``use_ema=True``, overwrite the weights with their moving average (Keras does it after fit)."""
        if not self.use_ema:
            return
        pairs = [(p, self.state[p]["average"]) for p in self._all_params() if "average" in self.state.get(p, {})]
        if pairs:
            foreach.copy_([p for p, _ in pairs], [a for _, a in pairs])


def _check_extra(extra: Dict[str, Any]) -> None:
    extra = dict(extra)
    if "lr" in extra:
        raise TypeError("Use the Keras argument name `learning_rate`, not `lr`.")
    if extra.pop("decay", None) is not None:
        warnings.warn("Argument `decay` is no longer supported and will be ignored.", stacklevel=4)
    if extra:
        raise TypeError(f"Argument(s) not recognized: {extra}")


def _check_common(
    clipnorm: Optional[float],
    clipvalue: Optional[float],
    global_clipnorm: Optional[float],
    use_ema: bool,
    ema_momentum: float,
    ema_overwrite_frequency: Optional[int],
    loss_scale_factor: Optional[float],
    gradient_accumulation_steps: Optional[int],
) -> None:
    if sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm)) > 1:
        raise ValueError(
            "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
            f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
        )
    if use_ema:
        if not 0 <= ema_momentum <= 1:
            raise ValueError(f"`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={ema_momentum}")
        if ema_overwrite_frequency and (not isinstance(ema_overwrite_frequency, int) or ema_overwrite_frequency < 1):
            raise ValueError(
                "`ema_overwrite_frequency` must be an integer >= 1 or None. "
                f"Received: ema_overwrite_frequency={ema_overwrite_frequency}"
            )
    if gradient_accumulation_steps and not (
        isinstance(gradient_accumulation_steps, int) and gradient_accumulation_steps >= 2
    ):
        raise ValueError(
            "`gradient_accumulation_steps` must be an integer >= 2. "
            f"Received: gradient_accumulation_steps={gradient_accumulation_steps}"
        )
    if loss_scale_factor is not None:
        raise ValueError(
            "Argument `loss_scale_factor` is not supported by keras_bridge optimizers (it only cancels out "
            "unless the training step scales the loss). Use Lightning's mixed precision, e.g. "
            f"`Trainer(precision='16-mixed')`, which scales the loss for you. Received: "
            f"loss_scale_factor={loss_scale_factor}"
        )


def get_learning_rate(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first param group, as a float (what Keras callbacks read).

    Example:
        >>> import torch
        >>> get_learning_rate(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5))
        0.5
    """
    if hasattr(optimizer, "keras_optimizer"):  # a Keras optimizer stepped by Lightning: its own value
        return float(optimizer.learning_rate)  # type: ignore[attr-defined]
    return float(optimizer.param_groups[0]["lr"])


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set the learning rate of every param group, as Keras's ``optimizer.learning_rate = value``.

    Raises:
        TypeError: the optimizer's lr is driven by a schedule (``optimizer.keras_schedule`` is set).
    """
    if hasattr(optimizer, "keras_optimizer"):
        optimizer.learning_rate = value  # type: ignore[attr-defined]
        return
    if getattr(optimizer, "keras_schedule", None) is not None:
        raise TypeError(
            "This optimizer was created with a `LearningRateSchedule` object as its `learning_rate` "
            "constructor argument, hence its learning rate is not settable. If you need the learning rate "
            "to be settable, you should instantiate the optimizer with a float `learning_rate` argument."
        )
    for group in optimizer.param_groups:
        group["lr"] = float(value)
