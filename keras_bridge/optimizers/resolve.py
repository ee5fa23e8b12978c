"""``compile(optimizer=...)``: turn whatever the user passed into an :class:`OptimizerSpec`.

Re-exported by :mod:`keras_bridge.optimizers`.
"""

from __future__ import annotations

import inspect
import numbers
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import numpy as np
import torch

from keras_bridge.optimizers.adadelta import Adadelta
from keras_bridge.optimizers.adagrad import Adagrad
from keras_bridge.optimizers.adam import Adam, AdamW
from keras_bridge.optimizers.adamax import Adamax
from keras_bridge.optimizers.base import KerasOptimizer, OptimizerSpec
from keras_bridge.optimizers.nadam import Nadam
from keras_bridge.optimizers.rmsprop import RMSprop
from keras_bridge.optimizers.schedules import check_schedule, is_schedule, learning_rate_at
from keras_bridge.optimizers.sgd import SGD
from keras_bridge.typing import LearningRate
from keras_bridge.utils.errors import did_you_mean
from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    import keras

_KERAS_NAMES = ("SGD", "RMSprop", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "Nadam")
_ACCEPTED_STRINGS = sorted(name.lower() for name in _KERAS_NAMES)
# Keras optimizers (lower-cased class names, as `keras.optimizers.get` accepts them) with no equivalent here.
_UNSUPPORTED_KERAS = {
    "adafactor",
    "ftrl",
    "lamb",
    "lion",
    "lossscaleoptimizer",
    "multioptimizer",
    "muon",
    "optimizer",
    "optimizermap",
    "schedulefreeadamw",
}
_ACCEPTED = (
    f"a Keras optimizer name ({', '.join(repr(s) for s in _ACCEPTED_STRINGS)}), a keras.optimizers.Optimizer "
    f"of one of the classes {', '.join(_KERAS_NAMES)}, a keras_bridge.optimizers class or spec (e.g. "
    "`kb.optimizers.Adam(1e-3)`), a torch.optim.Optimizer class or instance, a callable "
    "`params -> torch.optim.Optimizer`, or `keras_bridge.optimizers.from_torch(...)`"
)


def _classes() -> Dict[str, type]:
    return {cls.__name__: cls for cls in (SGD, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam)}


def _torch_name(cls: type) -> str:
    if getattr(torch.optim, cls.__name__, None) is cls:
        return f"torch.optim.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


class _UseInstance:
    """Factory that returns an already-built optimizer after checking that it holds the given parameters."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def __call__(self, params: Any) -> torch.optim.Optimizer:
        given = _flatten(params)
        own = [p for group in self.optimizer.param_groups for p in group["params"]]
        own_ids, given_ids = {id(p) for p in own}, {id(p) for p in given}
        missing = sum(1 for p in given if p.requires_grad and id(p) not in own_ids)
        foreign = sum(1 for p in own if id(p) not in given_ids)
        if missing or foreign:
            raise ValueError(
                f"The `optimizer` instance {type(self.optimizer).__name__} was built on other parameters than "
                f"the model's: {missing} trainable model parameter(s) are not in it and {foreign} of its "
                "parameter(s) are not the model's. Build it on `module.parameters()`, or pass the optimizer "
                "class or a factory `params -> optimizer` instead."
            )
        return self.optimizer


def _flatten(params: Any) -> List[torch.Tensor]:
    if isinstance(params, torch.Tensor):
        return [params]
    flat: List[torch.Tensor] = []
    for item in params:
        if isinstance(item, dict):
            flat.extend(_flatten(item["params"]))
        else:
            flat.append(item)
    return flat


class _TorchFactory:
    """``params -> cls(params, lr=schedule(0), **kwargs)`` with ``keras_schedule`` set on the result."""

    def __init__(self, cls: Any, learning_rate: Optional[LearningRate], kwargs: Dict[str, Any]) -> None:
        self.cls, self.learning_rate, self.kwargs = cls, learning_rate, kwargs

    def __call__(self, params: Any) -> torch.optim.Optimizer:
        kwargs = dict(self.kwargs)
        if issubclass(self.cls, KerasOptimizer):
            if self.learning_rate is not None:
                kwargs["learning_rate"] = self.learning_rate
            return self.cls(params, **kwargs)
        schedule = self.learning_rate if _is_schedule_like(self.learning_rate) else None
        if self.learning_rate is not None:
            kwargs["lr"] = learning_rate_at(self.learning_rate, 0)
        optimizer = self.cls(params, **kwargs)
        if schedule is not None:
            optimizer.keras_schedule = schedule
        return optimizer


class _ZeroArgLearningRate:
    """Keras calls a non-schedule callable ``learning_rate`` without arguments; adapt it to ``step -> lr``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, step: int) -> float:
        return float(self.fn())


def _is_schedule_like(obj: object) -> bool:
    return obj is not None and not isinstance(obj, numbers.Real) and (is_schedule(obj) or callable(obj))


def from_torch(optimizer_cls: type, learning_rate: Optional[LearningRate] = None, **kwargs: Any) -> OptimizerSpec:
    """A spec for a torch optimizer class whose lr may be a Keras schedule.

    Args:
        optimizer_cls: a ``torch.optim.Optimizer`` subclass, e.g. ``torch.optim.AdamW``.
        learning_rate: a float, a Keras ``LearningRateSchedule`` or a callable ``step -> lr``; ``None``
            keeps the class default. A schedule sets the initial ``lr`` to ``schedule(0)`` and is returned
            by ``build`` so that :class:`~keras_bridge.optimizers.schedules.KerasScheduleLR` steps it.
        **kwargs: the other constructor arguments of ``optimizer_cls``.

    Returns:
        The :class:`OptimizerSpec`.

    Raises:
        TypeError: ``optimizer_cls`` is not an optimizer class, or the arguments do not fit its signature.

    Example:
        >>> import torch
        >>> spec = from_torch(torch.optim.SGD, learning_rate=lambda step: 0.1 / (step + 1), momentum=0.9)
        >>> opt, schedule = spec.build([torch.zeros(2, requires_grad=True)])
        >>> opt.param_groups[0]["lr"], schedule(1)
        (0.1, 0.05)
    """
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
        raise TypeError(
            "Expected argument `optimizer_cls` to be a torch.optim.Optimizer subclass, but got "
            f"{optimizer_cls!r} of type {type(optimizer_cls).__name__}."
        )
    lr_name = "learning_rate" if issubclass(optimizer_cls, KerasOptimizer) else "lr"
    if learning_rate is not None and lr_name in kwargs:
        raise TypeError(f"Pass the learning rate once: got both `learning_rate` and `{lr_name}`.")
    if learning_rate is not None and not isinstance(learning_rate, numbers.Real) and not callable(learning_rate):
        raise TypeError(
            "Expected argument `learning_rate` to be a float, a Keras LearningRateSchedule or a callable "
            f"`step -> lr`, but got {learning_rate!r}."
        )
    try:
        inspect.signature(optimizer_cls).bind(None, **kwargs, **({lr_name: 0.0} if learning_rate is not None else {}))
    except TypeError as err:
        raise TypeError(f"Arguments {sorted(kwargs)} do not fit {_torch_name(optimizer_cls)}: {err}") from None
    schedule = learning_rate if _is_schedule_like(learning_rate) else None
    return OptimizerSpec(_torch_name(optimizer_cls), _TorchFactory(optimizer_cls, learning_rate, kwargs), schedule)


def get_optimizer(identifier: Any) -> OptimizerSpec:
    """Resolve ``compile(optimizer=...)`` into an :class:`OptimizerSpec`, checking it before training.

    Args:
        identifier: a Keras optimizer name (``"rmsprop"``, case-insensitive); a Keras optimizer object or
            config dict (translated into the equivalent class of this module, schedule included); a class
            or spec of this module (``kb.optimizers.Adam(1e-3)``); a torch optimizer class (built with its
            defaults) or instance (used as is); a callable ``params -> torch.optim.Optimizer``; or a spec
            from :func:`from_torch`.

    Returns:
        The spec; ``spec.build(params)`` gives ``(optimizer, schedule_or_None)``.

    Raises:
        ValueError: an unknown name, or a Keras optimizer this package does not reproduce.
        TypeError: anything else.

    Example:
        >>> spec = get_optimizer("RMSprop")
        >>> spec.name
        'RMSprop'
    """
    if isinstance(identifier, OptimizerSpec):
        return identifier
    if isinstance(identifier, str):
        return _from_string(identifier)
    if isinstance(identifier, torch.optim.Optimizer):
        return OptimizerSpec(type(identifier).__name__, _UseInstance(identifier))
    if isinstance(identifier, type) and issubclass(identifier, torch.optim.Optimizer):
        name = identifier.__name__ if issubclass(identifier, KerasOptimizer) else _torch_name(identifier)
        return OptimizerSpec(name, identifier)
    if isinstance(identifier, dict) or _is_keras_optimizer(identifier):
        return _from_keras(identifier)
    if callable(identifier) and not is_schedule(identifier) and not isinstance(identifier, (type, torch.nn.Module)):
        name = getattr(identifier, "__qualname__", None) or type(identifier).__name__
        return OptimizerSpec(name, identifier)
    raise TypeError(
        f"Could not interpret argument `optimizer`: {identifier!r} of type {type(identifier).__name__}. "
        f"Expected {_ACCEPTED}."
    )


def _is_keras_optimizer(obj: object) -> bool:
    """A Keras optimizer instance or class (Keras is imported only if it is already loaded)."""
    if "keras" not in sys.modules:
        return False
    base = import_keras().optimizers.Optimizer
    return isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base))


def _from_string(identifier: str) -> OptimizerSpec:
    key = identifier.lower()
    classes = {name.lower(): cls for name, cls in _classes().items()}
    if key in classes:
        return OptimizerSpec(identifier, classes[key])
    extra = ""
    if key in _UNSUPPORTED_KERAS:
        extra = f" '{identifier}' is a Keras optimizer that keras_bridge does not reproduce."
    raise ValueError(
        f"Could not interpret optimizer identifier for argument `optimizer`: {identifier!r}.{extra}"
        f"{did_you_mean(identifier, _ACCEPTED_STRINGS) if not extra else ''} "
        f"Accepted strings (case-insensitive): {', '.join(repr(s) for s in _ACCEPTED_STRINGS)}."
    )


def _keras_learning_rate(keras_optimizer: keras.optimizers.Optimizer) -> Any:
    keras = import_keras()
    raw = getattr(keras_optimizer, "_learning_rate", None)
    if isinstance(raw, keras.optimizers.schedules.LearningRateSchedule):
        return raw
    if callable(raw) and not isinstance(raw, keras.Variable):
        return _ZeroArgLearningRate(raw)
    # The float32 value of Keras's lr variable, written with the fewest digits (0.1, not 0.10000000149).
    return float(str(np.float32(keras_optimizer.get_config()["learning_rate"])))


def _overrides_keras(obj: Any) -> Optional[str]:
    """The name of an update method that a user subclass of a Keras optimizer redefines, if any."""
    for method in (
        "update_step",
        "_parallel_update_step",
        "_backend_update_step",
        "apply",
        "build",
        "_apply_weight_decay",
        "_clip_gradients",
        "_backend_apply_gradients",
    ):
        owner = next((c for c in type(obj).__mro__ if method in c.__dict__), None)
        if owner is not None and not owner.__module__.startswith("keras."):
            return f"{owner.__qualname__}.{method}"
    return None


def _from_keras(identifier: Any) -> OptimizerSpec:
    keras = import_keras()
    obj = identifier
    if isinstance(identifier, dict):
        try:
            obj = keras.optimizers.deserialize(dict(identifier))
        except Exception as err:
            raise ValueError(f"Could not interpret argument `optimizer`: {identifier!r} ({err}).") from err
    elif isinstance(identifier, type):
        obj = identifier()
    ours = next(
        (
            cls
            for name, cls in _classes().items()
            if isinstance(obj, getattr(keras.optimizers, name))
            and not (name == "Adam" and isinstance(obj, keras.optimizers.AdamW))
        ),
        None,
    )
    if ours is None:
        raise ValueError(
            f"Unsupported Keras optimizer for argument `optimizer`: {type(obj).__name__} ({obj!r}). "
            f"keras_bridge reproduces these Keras optimizers: {', '.join(_KERAS_NAMES)}. For another algorithm, "
            "pass a torch optimizer class or a factory `params -> torch.optim.Optimizer`."
        )
    custom = _overrides_keras(obj)
    if custom is not None:
        raise ValueError(
            f"Unsupported Keras optimizer for argument `optimizer`: {type(obj).__name__} redefines {custom}, "
            "so its updates cannot be reproduced. Pass the built-in Keras class or a torch optimizer instead."
        )
    if getattr(obj, "_exclude_from_weight_decay", None) or getattr(obj, "_exclude_from_weight_decay_pattern", None):
        raise ValueError(
            f"The Keras optimizer given as `optimizer` ({type(obj).__name__}) uses `exclude_from_weight_decay`, "
            "which keras_bridge cannot map onto torch parameters. Build a keras_bridge optimizer with param "
            "groups instead, setting `weight_decay=None` in the excluded group."
        )
    config = {k: v for k, v in obj.get_config().items() if k not in ("name", "learning_rate")}
    learning_rate = _keras_learning_rate(obj)
    check_schedule(learning_rate)
    spec = ours(learning_rate=learning_rate, **config)
    spec.name = type(obj).__name__
    return spec
