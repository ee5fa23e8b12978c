"""Describe objects as JSON and rebuild them without unpickling: the config half of ``kb.load_model``.

A ``.keras`` file written by the bridge must be loadable without executing untrusted code, as Keras's
``safe_mode=True``. So nothing is pickled: torch modules, torch losses and torchmetrics metrics are
described by their class path and constructor arguments, Keras objects by Keras's own
``serialize_keras_object``, functions and classes by their import path. Rebuilding imports only
``torch``/``torchmetrics``/``keras``/``keras_bridge`` names unless the caller passes
``custom_objects`` (or ``safe_mode=False``).

Constructor arguments are found as Keras finds a layer's config: ``get_config()`` when the class
defines it (rebuilt with ``from_config``/``cls(**config)``), otherwise the attribute of the same name
as each ``__init__`` parameter (how ``torch.nn`` layers store theirs: ``Linear.in_features``,
``Conv2d.kernel_size``...). A required argument that cannot be found makes the object not
describable (:class:`NotSerializable`).

Example:
    >>> import torch
    >>> config = serialize(torch.nn.Linear(3, 2, bias=False))
    >>> config["config"]
    {'in_features': 3, 'out_features': 2, 'bias': False}
    >>> deserialize(config).weight.shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import collections
import importlib
import inspect
import math
import numbers
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from keras_bridge.utils.keras import import_keras

TAG = "__kb__"
_SAFE_ROOTS = ("torch", "torchmetrics", "keras", "keras_bridge")
_SKIPPED_ARGS = {"self", "device", "dtype"}


class NotSerializable(ValueError):
    """Raised for an object that cannot be described as JSON (the message says which and why)."""


# ---------------------------------------------------------------------------- describe
NOT_PLAIN: Any = object()  # what plain_data returns for anything but plain data


def plain_data(obj: object, describe: Callable[[Any], Any]) -> Any:
    """``obj`` as JSON data when it is None, a string, a bool, a number, or a list or string-keyed dict of
    values (each described by ``describe``); :data:`NOT_PLAIN` otherwise.

    Raises:
        NotSerializable: a dict with keys that are not strings.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, Mapping):
        if not all(isinstance(k, str) for k in obj):
            raise NotSerializable(f"dict keys must be strings to be saved, got {list(obj)!r}")
        return {str(k): describe(v) for k, v in obj.items()}
    return NOT_PLAIN


def serialize(obj: object) -> Any:
    """A JSON-able description of ``obj`` (see the module docstring for what is accepted).

    Raises:
        NotSerializable: ``obj`` (or a part of it) cannot be described.
    """
    data = plain_data(obj, serialize)
    if data is not NOT_PLAIN:
        return data
    if _is_keras_serializable(obj):
        return {TAG: "keras", "config": import_keras().saving.serialize_keras_object(obj)}
    if isinstance(obj, type) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return {TAG: "symbol", **_path(obj)}
    if isinstance(obj, nn.Module):
        return _describe_module(obj)
    optimizer = _describe_optimizer_spec(obj)
    if optimizer is not None:
        return optimizer
    raise NotSerializable(f"{obj!r} of type {type(obj).__name__} cannot be described as JSON")


def _is_keras_serializable(obj: object) -> bool:
    import sys

    if "keras" not in sys.modules or isinstance(obj, type):
        return False
    return isinstance(obj, keras_object_kinds())


def keras_object_kinds(layers: bool = True) -> Tuple[type, ...]:
    """The Keras classes whose objects Keras itself serializes: losses, metrics, optimizers, schedules, layers."""
    keras = import_keras()
    kinds = (
        keras.losses.Loss,
        keras.metrics.Metric,
        keras.optimizers.Optimizer,
        keras.optimizers.schedules.LearningRateSchedule,
    )
    return kinds + ((keras.layers.Layer,) if layers else ())


def _path(obj: object) -> Dict[str, str]:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not name or "<locals>" in name or "<lambda>" in name:
        raise NotSerializable(f"{obj!r} has no import path (a lambda or a local definition)")
    if inspect.isbuiltin(obj) and "." in name:
        # torch's C functions report a qualname inside a private class ("_VariableFunctionsClass.tanh");
        # name them where users import them from.
        short = getattr(obj, "__name__", "")
        for candidate in (module, "torch.nn.functional", "torch"):
            if getattr(sys.modules.get(candidate), short, None) is obj:
                return {"module": candidate, "name": short}
        raise NotSerializable(f"{obj!r} has no public import path")
    return {"module": module, "name": name}


def _init_signature(cls: type) -> Optional[inspect.Signature]:
    try:
        return inspect.signature(cls.__init__)  # type: ignore[misc]
    except (TypeError, ValueError):
        return None


def _constructor_config(obj: object) -> Dict[str, Any]:
    get_config = getattr(obj, "get_config", None)
    if callable(get_config):
        return serialize(get_config())
    signature = _init_signature(type(obj))
    config: Dict[str, Any] = {}
    for p in signature.parameters.values() if signature else ():
        if p.name in _SKIPPED_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if not hasattr(obj, p.name):
            if p.default is p.empty:
                raise NotSerializable(
                    f"{type(obj).__qualname__}: the constructor argument {p.name!r} is not stored as an "
                    "attribute of the same name; define `get_config()` returning the constructor arguments"
                )
            continue
        value = getattr(obj, p.name)
        if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None  # torch stores `bias=True` as the bias Parameter itself
        if isinstance(value, torch.Tensor):
            raise NotSerializable(f"{type(obj).__qualname__}: the argument {p.name!r} is a tensor")
        config[p.name] = serialize(value)
    return config


def _describe_module(module: nn.Module) -> Dict[str, Any]:
    description: Dict[str, Any] = {TAG: "object", **_path(type(module))}
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) and type(module).__init__ in (
        nn.Sequential.__init__,
        nn.ModuleList.__init__,
        nn.ModuleDict.__init__,
    ):
        description["children"] = [[name, _describe_module(child)] for name, child in module.named_children()]
        return description
    description["config"] = _constructor_config(module)
    return description


def _describe_optimizer_spec(obj: object) -> Optional[Dict[str, Any]]:
    """An ``OptimizerSpec`` as ``{class, args, kwargs}``, or None for anything else."""
    from keras_bridge.optimizers.base import OptimizerSpec, _KerasClassFactory
    from keras_bridge.optimizers.resolve import _TorchFactory, _UseInstance

    if not isinstance(obj, OptimizerSpec):
        return None
    keras_optimizer = getattr(obj, "keras_optimizer", None)
    if keras_optimizer is not None:  # a Keras model's own Keras optimizer
        return serialize(keras_optimizer)
    factory = obj.factory
    if isinstance(factory, _KerasClassFactory):
        return {
            TAG: "optimizer",
            **_path(factory.cls),
            "args": serialize(list(factory.args)),
            "kwargs": serialize(factory.kwargs),
        }
    if isinstance(factory, _TorchFactory):
        kwargs = dict(factory.kwargs)
        if factory.learning_rate is not None:
            kwargs["learning_rate"] = factory.learning_rate
        return {TAG: "optimizer", "from_torch": True, **_path(factory.cls), "args": [], "kwargs": serialize(kwargs)}
    if isinstance(factory, _UseInstance):
        # A ready optimizer: its constructor defaults rebuild an equivalent one on new parameters.
        defaults = {k: v for k, v in factory.optimizer.defaults.items() if k != "params"}
        return {
            TAG: "optimizer",
            "from_torch": True,
            **_path(type(factory.optimizer)),
            "args": [],
            "kwargs": serialize(_jsonable_only(defaults)),
        }
    if isinstance(factory, type):
        return {TAG: "optimizer", "plain_class": True, **_path(factory), "args": [], "kwargs": {}}
    raise NotSerializable(f"the optimizer {obj.name!r} is a custom factory and cannot be described as JSON")


def _jsonable_only(values: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in values.items():
        try:
            out[k] = serialize(v)
        except NotSerializable:
            continue
    return out


# ---------------------------------------------------------------------------- rebuild
def resolve(module: str, name: str, custom_objects: Optional[Mapping[str, Any]] = None, safe_mode: bool = True) -> Any:
    """Import ``module.name``: from ``custom_objects`` first, else only from trusted packages in safe mode.

    Raises:
        ValueError: the name is outside the trusted packages in safe mode, or cannot be imported.
    """
    custom = dict(custom_objects or {})
    for key in (f"{module}.{name}", name, name.rsplit(".", 1)[-1]):
        if key in custom:
            return custom[key]
    if safe_mode and module.split(".")[0] not in _SAFE_ROOTS:
        raise ValueError(
            f"The file refers to `{module}.{name}`, which is not part of torch, torchmetrics or keras. Pass "
            f"`custom_objects={{'{name.rsplit('.', 1)[-1]}': <the class or function>}}`, or `safe_mode=False` "
            "if you trust the file (it then imports that module)."
        )
    try:
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Could not import `{module}.{name}` named in the file: {err}") from err
    return target


def deserialize(config: Any, custom_objects: Optional[Mapping[str, Any]] = None, safe_mode: bool = True) -> Any:
    """Rebuild what :func:`serialize` described.

    Raises:
        ValueError: a class outside the trusted packages (see :func:`resolve`) or a broken description.
    """
    if isinstance(config, list):
        return [deserialize(v, custom_objects, safe_mode) for v in config]
    if not isinstance(config, dict):
        return config
    kind = config.get(TAG)
    if kind is None:
        return {k: deserialize(v, custom_objects, safe_mode) for k, v in config.items()}
    if kind == "keras":
        keras = import_keras()
        return keras.saving.deserialize_keras_object(
            config["config"], custom_objects=custom_objects, safe_mode=safe_mode
        )
    target = resolve(config["module"], config["name"], custom_objects, safe_mode)
    if kind == "symbol":
        return target
    if kind == "object":
        return _rebuild_object(target, config, custom_objects, safe_mode)
    if kind == "optimizer":
        return _rebuild_optimizer(target, config, custom_objects, safe_mode)
    raise ValueError(f"Unknown entry kind {kind!r} in the file's configuration.")


def _rebuild_object(
    cls: Any, config: Dict[str, Any], custom_objects: Optional[Mapping[str, Any]], safe_mode: bool
) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"`{config['module']}.{config['name']}` is not a torch.nn.Module class.")
    if "children" in config:
        children = collections.OrderedDict(
            (name, deserialize(child, custom_objects, safe_mode)) for name, child in config["children"]
        )
        return cls(children) if cls is not nn.ModuleList else cls(list(children.values()))
    kwargs = deserialize(config.get("config") or {}, custom_objects, safe_mode)
    from_config = getattr(cls, "from_config", None)
    if callable(from_config) and callable(getattr(cls, "get_config", None)):
        return from_config(kwargs)
    return cls(**kwargs)


def _rebuild_optimizer(
    cls: Any, config: Dict[str, Any], custom_objects: Optional[Mapping[str, Any]], safe_mode: bool
) -> Any:
    import keras_bridge.optimizers as optimizers

    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"`{config['module']}.{config['name']}` is not a torch optimizer class.")
    args = deserialize(config.get("args") or [], custom_objects, safe_mode)
    kwargs = deserialize(config.get("kwargs") or {}, custom_objects, safe_mode)
    if config.get("plain_class"):
        return optimizers.get_optimizer(cls)
    if config.get("from_torch"):
        return optimizers.from_torch(cls, **kwargs)
    return cls(*args, **kwargs)


# ---------------------------------------------------------------------------- nested state
def flatten_state(obj: object, arrays: List[torch.Tensor]) -> Any:
    """``obj`` as JSON with every tensor replaced by ``{TAG: "tensor", "index": i}`` (appended to ``arrays``).

    Used for optimizer and scheduler ``state_dict()``s, whose dicts have int keys (kept as such).

    Raises:
        NotSerializable: a value that is neither a tensor nor plain data.
    """
    if isinstance(obj, torch.Tensor):
        arrays.append(obj.detach().cpu())
        return {TAG: "tensor", "index": len(arrays) - 1}
    if isinstance(obj, Mapping):
        return {TAG: "dict", "items": [[k, flatten_state(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {TAG: "tuple", "items": [flatten_state(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [flatten_state(v, arrays) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {TAG: "float", "repr": repr(obj)}
    raise NotSerializable(f"state value {obj!r} of type {type(obj).__name__} cannot be saved without pickle")


def unflatten_state(obj: object, arrays: List[torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, list):
        return [unflatten_state(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get(TAG)
    if kind == "tensor":
        return arrays[obj["index"]]
    if kind == "dict":
        return {k: unflatten_state(v, arrays) for k, v in obj["items"]}
    if kind == "tuple":
        return tuple(unflatten_state(v, arrays) for v in obj["items"])
    if kind == "float":
        return float(obj["repr"])
    raise ValueError(f"Unknown state entry {obj!r}.")
