"""Keras's serialized form of compile arguments and callbacks, and config files (JSON or YAML).

Keras describes a loss, a metric, an optimizer or a learning-rate schedule as
``keras.saving.serialize_keras_object(obj)``: a dict with the keys ``module``, ``class_name``, ``config``
(the constructor arguments, or a function's name) and ``registered_name`` (``"package>Name"`` for a
class or function registered with ``keras.saving.register_keras_serializable``). ``KerasModule.compile``
and the ``KerasModule`` constructor accept that form wherever they accept the object, at any place of a
``loss`` / ``metrics`` structure, and :func:`resolve` is what turns it back into the object. Only
``class_name`` is required, so a hand-written ``{"class_name": "RMSprop", "config": {"learning_rate":
1e-3}}`` works too; an optimizer's ``learning_rate`` may itself be a schedule config.

Keras cannot serialize callbacks (they have no ``get_config``); a callback config has the same shape with
the constructor arguments as ``config`` (:func:`keras_bridge.callbacks.from_config`). Lists of them, and
compile arguments, load from files with :func:`read_config_file`.

A bad config is a ``ValueError`` naming the key and the accepted ones.

Example:
    >>> import keras
    >>> config = keras.saving.serialize_keras_object(keras.optimizers.Adam(learning_rate=0.01))
    >>> optimizer = resolve(config, "optimizer")
    >>> type(optimizer).__name__, round(float(optimizer.learning_rate), 4)
    ('Adam', 0.01)
    >>> resolve({"class_name": "Adam", "confg": {}}, "optimizer")
    Traceback (most recent call last):
    ...
    ValueError: Invalid `optimizer` config: unknown key 'confg'. A Keras config has the keys 'class_name', ...
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeGuard

import keras_bridge.saving.serialization as S
from keras_bridge.typing import PathLike
from keras_bridge.utils.errors import did_you_mean
from keras_bridge.utils.keras import import_keras, keras_loaded

#: The keys of ``keras.saving.serialize_keras_object``'s output.
CONFIG_KEYS = ("class_name", "config", "module", "registered_name")
#: The ``compile`` arguments, in Keras's order.
COMPILE_ARGUMENTS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")
# Which Keras namespace (and base class) a config of each argument names.
_KINDS: Dict[str, Tuple[str, str]] = {
    "optimizer": ("optimizers", "Optimizer"),
    "schedule": ("optimizers.schedules", "LearningRateSchedule"),
    "loss": ("losses", "Loss"),
    "metrics": ("metrics", "Metric"),
    "weighted_metrics": ("metrics", "Metric"),
    "callbacks": ("callbacks", "Callback"),
}
# Classes of a Keras namespace that a config cannot name usefully.
_NOT_ACCEPTED = {"Optimizer", "LearningRateSchedule", "Loss", "Metric", "Callback", "CallbackList", "Reduction"}
_NOT_FUNCTIONS = {"deserialize", "get", "serialize"}


def is_keras_config(value: object) -> bool:
    """True for a dict in Keras's serialized form (it has a ``class_name``): one object, not a structure."""
    return isinstance(value, Mapping) and "class_name" in value and S.TAG not in value


def _namespace(kind: str) -> Any:
    target: Any = import_keras()
    for part in _KINDS[kind][0].split("."):
        target = getattr(target, part)
    return target


def _base(kind: str) -> type:
    return getattr(_namespace(kind), _KINDS[kind][1])


def _accepted_bases(kind: str) -> Tuple[type, ...]:
    # Keras's compile takes losses as metrics too.
    return (_base(kind), _base("loss")) if kind in ("metrics", "weighted_metrics") else (_base(kind),)


def accepted_class_names(kind: str) -> List[str]:
    """The built-in ``class_name`` values for an argument (``"optimizer"``, ``"loss"``, ``"callbacks"``...)."""
    namespace, base = _namespace(kind), _base(kind)
    return sorted(
        name
        for name in dir(namespace)
        if not name.startswith("_")
        and name not in _NOT_ACCEPTED
        and isinstance(getattr(namespace, name), type)
        and issubclass(getattr(namespace, name), base)
    )


def check_config_keys(config: Mapping[str, Any], argument: str) -> None:
    """Refuse keys outside :data:`CONFIG_KEYS` and malformed values, naming them and the accepted keys.

    Raises:
        ValueError: an unknown key, a ``class_name`` that is not a string, or a ``config`` that is not a dict.
    """
    unknown = [k for k in config if k not in CONFIG_KEYS]
    if unknown:
        keys = ", ".join(repr(k) for k in unknown)
        raise ValueError(
            f"Invalid `{argument}` config: unknown key{'s' if len(unknown) > 1 else ''} {keys}. A Keras config has "
            f"the keys {', '.join(repr(k) for k in CONFIG_KEYS)} (only 'class_name' is required). "
            f"Received: {dict(config)!r}"
        )
    if not isinstance(config.get("class_name"), str):
        raise ValueError(f"Invalid `{argument}` config: 'class_name' must be a string. Received: {dict(config)!r}")
    inner = config.get("config")
    if inner is not None and not isinstance(inner, (Mapping, str)):
        raise ValueError(
            f"Invalid `{argument}` config: 'config' must be a dict of constructor arguments (or a function "
            f"name). Received: config={inner!r}"
        )


def _registered(name: Optional[str], custom_objects: Mapping[str, Any]) -> Any:
    if not name:
        return None
    if name in custom_objects:
        return custom_objects[name]
    return import_keras().saving.get_registered_object(name, custom_objects=dict(custom_objects))


def find_class(
    config: Mapping[str, Any],
    kind: str,
    argument: str,
    custom_objects: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Any:
    """The class (or, for ``class_name="function"``, the function) a config names.

    Looked up as Keras looks it up: ``custom_objects``, then the classes and functions registered with
    ``keras.saving.register_keras_serializable`` (by ``registered_name``, then ``class_name``), then the
    built-in Keras namespace of the argument (``keras.optimizers``, ``keras.losses``...), then a
    ``module`` inside Keras. ``extra`` (``{name: class}``) is searched first.

    Raises:
        ValueError: nothing of that name, naming the accepted built-in names.
    """
    custom = dict(custom_objects or {})
    class_name = config["class_name"]
    inner = config.get("config")
    namespace = _namespace(kind)
    if class_name == "function":
        if not isinstance(inner, str):
            raise ValueError(
                f"Invalid `{argument}` config: a function config names the function as 'config' (a string). "
                f"Received: {dict(config)!r}"
            )
        fn = _registered(inner, custom) or getattr(namespace, inner, None)
        if callable(fn) and not isinstance(fn, type):
            return fn
        functions = sorted(
            n
            for n in dir(namespace)
            if not n.startswith("_") and n not in _NOT_FUNCTIONS and inspect.isfunction(getattr(namespace, n))
        )
        raise ValueError(
            f"Invalid `{argument}` config: unknown function {inner!r}.{did_you_mean(inner, functions)} Accepted: "
            f"{', '.join(functions) or 'none'}, or a function registered with "
            "`keras.saving.register_keras_serializable` (its name 'package>name')."
        )
    if extra and class_name in extra:
        return extra[class_name]
    registered = config.get("registered_name")
    found = next((f for f in (_registered(n, custom) for n in (registered, class_name)) if f is not None), None)
    if found is None:
        found = getattr(namespace, class_name, None)
    if found is None and kind == "optimizer":  # Keras accepts "adam" for Adam
        found = next(
            (getattr(namespace, n) for n in accepted_class_names(kind) if n.lower() == class_name.lower()), None
        )
    module = config.get("module")
    if found is None and isinstance(module, str) and module.split(".")[0] == "keras":
        try:  # Keras imports a `module` only inside Keras
            found = getattr(importlib.import_module(module), class_name, None)
        except ImportError:
            found = None
    if isinstance(found, type) and (issubclass(found, _accepted_bases(kind)) or (extra and found in extra.values())):
        return found
    accepted = list(extra or ()) + accepted_class_names(kind)
    if found is not None:
        raise ValueError(
            f"Invalid `{argument}` config: class_name={class_name!r} is not a keras.{_KINDS[kind][0]}."
            f"{_KINDS[kind][1]}. Accepted: {', '.join(sorted(set(accepted)))}."
        )
    raise ValueError(
        f"Invalid `{argument}` config: unknown class_name={class_name!r}.{did_you_mean(class_name, accepted)} "
        f"Accepted: {', '.join(sorted(set(accepted)))}, or a class registered with "
        "`keras.saving.register_keras_serializable` (give its registered_name 'package>Name')."
    )


def constructor_arguments(cls: type) -> Tuple[List[str], bool]:
    """``(names, open_ended)``: the keyword arguments ``cls(...)`` takes, following ``**kwargs`` up the MRO.

    ``open_ended`` is True when some class takes ``**kwargs`` without passing them to a base class
    that names its own (so any name may be accepted).
    """
    names: List[str] = []
    for klass in cls.__mro__:
        if "__init__" not in klass.__dict__ or klass is object:
            continue
        try:
            parameters = inspect.signature(klass.__init__).parameters.values()  # type: ignore[misc]
        except (TypeError, ValueError):
            return names, True
        names += [p.name for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return sorted(set(names)), False
    return sorted(set(names)), False


def _argument_error(cls: type, kwargs: Mapping[str, Any], argument: str, err: BaseException) -> ValueError:
    name = getattr(cls, "__name__", repr(cls))
    names, open_ended = constructor_arguments(cls) if isinstance(cls, type) else ([], True)
    unknown = [k for k in kwargs if k not in names]
    if unknown and not open_ended:
        hint = did_you_mean(unknown[0], names)
        return ValueError(
            f"Invalid `{argument}` config: {name} got unknown argument(s) {', '.join(repr(k) for k in unknown)} in "
            f"'config'.{hint} {name} takes: {', '.join(names)}."
        )
    return ValueError(f"Invalid `{argument}` config: {name}({kwargs!r}) failed: {err}")


def deserialize_config(
    config: Mapping[str, Any], argument: str, custom_objects: Optional[Mapping[str, Any]] = None, kind: str = ""
) -> Any:
    """The object one Keras config describes (``argument`` names the ``compile`` argument, for messages).

    Raises:
        ValueError: a bad key, an unknown class, or constructor arguments the class refuses.
    """
    kind = kind or argument
    check_config_keys(config, argument)
    target = find_class(config, kind, argument, custom_objects)
    if config["class_name"] == "function":
        return target
    kwargs = copy.deepcopy(dict(config.get("config") or {}))
    if kind == "optimizer" and is_keras_config(kwargs.get("learning_rate")):
        kwargs["learning_rate"] = deserialize_config(
            kwargs["learning_rate"], f"{argument}.learning_rate", custom_objects, kind="schedule"
        )
    try:
        from_config = getattr(target, "from_config", None)
        return from_config(kwargs) if callable(from_config) else target(**kwargs)
    except (TypeError, ValueError) as err:
        raise _argument_error(target, kwargs, argument, err) from err


def _contains_config(value: object) -> bool:
    if isinstance(value, Mapping):
        return is_keras_config(value) or S.TAG in value or any(_contains_config(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_contains_config(v) for v in value)
    return False


def resolve(value: Any, argument: str, custom_objects: Optional[Mapping[str, Any]] = None) -> Any:
    """A ``compile`` argument with every config in it (Keras's, or the bridge's saved form) made an object.

    Structures (lists, tuples, dicts keyed by output name) are walked; anything else is returned as is.
    """
    if not _contains_config(value):
        return value
    if is_keras_config(value):
        return deserialize_config(value, argument, custom_objects)
    if isinstance(value, Mapping) and S.TAG in value:
        return S.deserialize(dict(value), custom_objects, safe_mode=True)
    if isinstance(value, Mapping):
        return type(value)((k, resolve(v, argument, custom_objects)) for k, v in value.items())  # type: ignore[call-arg]
    items = [resolve(v, argument, custom_objects) for v in value]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*items)
    return type(value)(items)


def resolve_compile_arguments(
    arguments: Mapping[str, Any], custom_objects: Optional[Mapping[str, Any]] = None
) -> Dict[str, Any]:
    """``compile``'s arguments with their Keras configs made objects (see :func:`resolve`)."""
    return {name: resolve(value, name, custom_objects) for name, value in arguments.items()}


# ---------------------------------------------------------------------------- describing
def _is_keras_describable(value: object) -> bool:
    if not keras_loaded():  # no Keras object, nor a function registered with Keras, exists before keras is loaded
        return False
    keras = import_keras()
    if isinstance(value, S.keras_object_kinds(layers=False)):
        return True
    if not inspect.isfunction(value):
        return False
    module = getattr(value, "__module__", "") or ""
    registered = keras.saving.get_registered_name(value) != value.__name__
    return registered or module.split(".")[0] == "keras"


def to_config(value: object) -> Any:
    """A JSON-able description of a ``compile`` argument that :func:`resolve` turns back into it.

    Keras objects and functions get Keras's own form (``keras.saving.serialize_keras_object``); torch
    losses, torchmetrics metrics, ``keras_bridge.optimizers`` objects and other importable objects get the
    bridge's (:mod:`keras_bridge.saving.serialization`).

    Raises:
        keras_bridge.saving.serialization.NotSerializable: something that cannot be described (a lambda).

    Example:
        >>> import keras
        >>> to_config(["accuracy", keras.metrics.AUC(name="auc")])[1]["class_name"]
        'AUC'
    """
    data = S.plain_data(value, to_config)
    if data is not S.NOT_PLAIN:
        return data
    if _is_keras_describable(value):
        return import_keras().saving.serialize_keras_object(value)
    return S.serialize(value)


def compile_config(arguments: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """:func:`to_config` of each ``compile`` argument, or None when one of them cannot be described."""
    try:
        return {name: to_config(value) for name, value in arguments.items()}
    except S.NotSerializable:
        return None


# ---------------------------------------------------------------------------- files
def read_config_file(path: PathLike) -> Any:
    """The content of a ``.json``, ``.yaml`` or ``.yml`` file (e.g. a list of callback configs).

    Raises:
        ValueError: another extension, or a file that does not parse.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"Expected a config file ending in '.json', '.yaml' or '.yml'. Received: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        if suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError
        raise ValueError(f"Could not parse {path}: {err}") from err
    except Exception as err:  # yaml.YAMLError
        raise ValueError(f"Could not parse {path}: {err}") from err


def is_config_file(value: object) -> TypeGuard[PathLike]:
    """True for a path (``str`` or ``os.PathLike``) ending in ``.json``, ``.yaml`` or ``.yml``."""
    if not isinstance(value, (str, os.PathLike)):
        return False
    return os.path.splitext(os.fspath(value))[1].lower() in (".json", ".yaml", ".yml")
