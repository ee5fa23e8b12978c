"""Nested structures as Keras walks them: lists, tuples (namedtuples included) and dicts.

The leaves come in the order ``keras.tree.flatten`` gives them (a dict by sorted keys, an ``OrderedDict``
in its own order, sequences in order); a serialized Keras object (``{"class_name": ..., "config": ...}``)
is a leaf. Both the data path and the compile plans use these, so they live outside either.

Example:
    >>> flatten({"b": 1, "a": (2, 3)})
    [2, 3, 1]
    >>> unpack_x_y_sample_weight((1, 2))
    (1, 2, None)
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple

from keras_bridge.utils.compat import pytree_children, pytree_map
from keras_bridge.utils.keras import import_keras, keras_loaded

Path = Tuple[Any, ...]


def is_namedtuple(obj: object) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def is_config(obj: object) -> bool:
    """A serialized Keras object (``{"class_name": ..., "config": ...}``): a leaf, not a dict of outputs."""
    return isinstance(obj, Mapping) and "class_name" in obj


def is_nested(obj: object) -> bool:
    """True for a list, tuple (namedtuples included) or dict: the containers Keras's tree walks into."""
    return isinstance(obj, (list, tuple)) or (isinstance(obj, Mapping) and not is_config(obj))


def children(obj: Any) -> List[Tuple[Any, Any]]:
    """``(key, child)`` pairs of a container in Keras's flattening order (dicts by sorted keys)."""
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        if not isinstance(obj, OrderedDict):
            try:
                keys = sorted(keys)
            except TypeError:
                pass
        return [(k, obj[k]) for k in keys]
    return list(enumerate(obj))


def _tree() -> Any:
    return import_keras().tree


def flatten_with_paths(obj: object, prefix: Path = ()) -> List[Tuple[Path, Any]]:
    """Every leaf of ``obj`` with its path of keys/indices, in Keras's order (``None`` is a leaf).

    ``keras.tree.flatten_with_path`` is not used: on a namedtuple (Keras 3.15) it orders the paths by
    field name but the leaves by position, pairing a leaf with another leaf's path.

    Example:
        >>> flatten_with_paths({"b": 1, "a": [2, None]})
        [(('a', 0), 2), (('a', 1), None), (('b',), 1)]
    """
    if not is_nested(obj):
        return [(prefix, obj)]
    out: List[Tuple[Path, Any]] = []
    for key, child in children(obj):
        out.extend(flatten_with_paths(child, (*prefix, key)))
    return out


def _torch_backend_leaves(obj: object, is_leaf: Optional[Callable[[Any], bool]] = None, sort: bool = True) -> List[Any]:
    """``keras.tree.flatten`` as Keras computes it on the torch backend, without importing keras.

    Keras walks torch's pytree after giving the outermost plain ``dict``/``defaultdict`` on each path sorted
    keys; the dicts inside a sorted one keep their insertion order (Keras 3.15 sorts no further). Without
    keras loaded no Keras container (its tracked lists and dicts) can exist, so this walk is the same.
    """
    if is_leaf is not None and is_leaf(obj):
        return [obj]
    nodes: Optional[List[Any]]
    if sort and isinstance(obj, dict) and type(obj) in (dict, defaultdict):
        nodes, sort = [obj[key] for key in sorted(obj)], False
    else:
        nodes = pytree_children(obj)
        if nodes is None:
            return [obj]
    return [leaf for node in nodes for leaf in _torch_backend_leaves(node, is_leaf, sort)]


def flatten(obj: object) -> List[Any]:
    """The leaves of ``obj`` in Keras's order (``keras.tree.flatten``; a serialized Keras object is one leaf)."""
    if is_config(obj):
        return [obj]
    if not keras_loaded():
        return _torch_backend_leaves(obj, is_config)
    tree = _tree()
    boxed = tree.traverse(lambda node: _Config(node) if is_config(node) else None, obj)
    return [leaf.config if isinstance(leaf, _Config) else leaf for leaf in tree.flatten(boxed)]


def flatten_values(obj: object) -> List[Any]:
    """The leaves of a structure of values (tensors, arrays, ``None``): ``keras.tree.flatten``, for every batch."""
    if not keras_loaded():
        return _torch_backend_leaves(obj)
    return _tree().flatten(obj)


class _Config:
    """A serialized Keras object, boxed so that ``keras.tree`` takes it for one leaf."""

    __slots__ = ("config",)

    def __init__(self, config: Mapping[str, object]) -> None:
        self.config = config


def _rebuild(node: object, items: Sequence[Tuple[Any, Any]]) -> Any:
    """A container of ``node``'s type holding ``items`` (``(key, value)`` pairs in flattening order).

    A dict keeps ``node``'s own key order, as ``keras.tree.map_structure`` does.
    """
    if isinstance(node, Mapping):
        by_key = dict(items)
        ordered = [(k, by_key[k]) for k in node.keys()]
        return OrderedDict(ordered) if isinstance(node, OrderedDict) else dict(ordered)
    values = [v for _, v in items]
    if is_namedtuple(node):
        return type(node)(*values)
    if isinstance(node, tuple):
        return tuple(values)
    return values


def pack_sequence_as(structure: object, flat: Sequence[Any]) -> Any:
    """Put the leaves ``flat`` (in Keras's order) into the shape of ``structure``, its dicts in their own order.

    ``keras.tree.pack_sequence_as`` would return each dict with sorted keys, where Keras's own outputs
    (``predict``'s, a loss's structure) keep the model's order.

    Raises:
        ValueError: ``flat`` has another number of leaves than ``structure``.
    """
    leaves: Iterator[Any] = iter(flat)

    def build(node: object) -> Any:
        if not is_nested(node):
            return next(leaves)
        return _rebuild(node, [(k, build(v)) for k, v in children(node)])

    count = count_leaves(structure)
    if count != len(flat):
        raise ValueError(f"Expected {count} leaves to fill the structure {describe(structure)}, received {len(flat)}.")
    return build(structure)


def map_leaves(fn: Callable[..., Any], obj: object) -> Any:
    """Apply ``fn`` to every leaf of a ``compile`` argument, a serialized Keras object being one leaf.

    ``keras.tree`` would walk into a config dict (and its ``traverse`` does not keep dict order), hence
    this walk of its own.
    """
    if not is_nested(obj):
        return fn(obj)
    return _rebuild(obj, [(k, map_leaves(fn, v)) for k, v in children(obj)])


def same_structure(a: object, b: object) -> bool:
    """True when ``a`` and ``b`` nest alike (``keras.tree.assert_same_structure``)."""
    try:
        _tree().assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return True


def map_structure(fn: Callable[..., Any], obj: object) -> Any:
    """Apply ``fn`` to every leaf of a structure of lists, tuples, namedtuples and dicts (``keras.tree``)."""
    if not keras_loaded():  # Keras's torch backend maps with torch's pytree, which this is
        return pytree_map(fn, obj)
    return _tree().map_structure(fn, obj)


def describe(obj: object, leaf: str = "*") -> str:
    """The shape of ``obj`` with every leaf shown as ``leaf``, as Keras prints structures in its errors.

    Example:
        >>> describe({"s": 1, "c": (2, 3)})
        "{'s': '*', 'c': ('*', '*')}"
    """

    def shape(node: object) -> Any:
        if not is_nested(node):
            return leaf
        if isinstance(node, Mapping):
            return {k: shape(v) for k, v in node.items()}
        return _rebuild(node, [(k, shape(v)) for k, v in children(node)])

    return str(shape(obj))


def count_leaves(obj: object) -> int:
    return len(flatten_values(obj))


def first_batch_dim(x: Any) -> int:
    """Batch size of a nested input: the first dim of its first leaf that is not ``None`` (Keras's rule)."""
    if not is_nested(x):
        return int(x.shape[0])
    for leaf in flatten_values(x):
        if leaf is not None:
            return int(leaf.shape[0])
    raise ValueError(f"Cannot tell the batch size: every input is None. Received: x={describe(x)}")


def unpack_x_y_sample_weight(data: object) -> Tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` of ``data`` by Keras's rules (``keras.utils.unpack_x_y_sample_weight``).

    A list counts as a tuple; a tuple of length 1-3 is ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``;
    anything else that is not a tuple (a tensor, a dict, a dataset) is all ``x``. Keras unpacks its dataset
    elements (batches) and ``fit``'s ``validation_data`` this way.

    Raises:
        ValueError: a tuple or list of another length, with Keras's message.

    Example:
        >>> unpack_x_y_sample_weight((1, 2)), unpack_x_y_sample_weight([1]), unpack_x_y_sample_weight({"a": 1})
        ((1, 2, None), (1, None, None), ({'a': 1}, None, None))
    """
    kind = type(data).__name__
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data[0], data[1], data[2]
    raise ValueError(
        "Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, found: "
        f"a {kind} of length {len(data)}"
    )
