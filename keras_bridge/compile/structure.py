"""Nested-structure helpers: output names, flattening of predictions and targets.

Keras keys everything by output: a model's outputs are a single tensor, a list (positional) or a
dict (flattened in sorted key order, as ``keras.tree.flatten`` does). Targets and sample weights
come in the same three shapes. These helpers turn all of them into flat lists aligned with one
list of output names, which is what the loss and metric plans work on.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence

import torch

Tensor = torch.Tensor


def output_structure(y_pred: Any) -> str:
    """Classify model outputs as ``"single"``, ``"list"`` or ``"dict"``."""
    if isinstance(y_pred, Mapping):
        return "dict"
    if isinstance(y_pred, (list, tuple)):
        return "list"
    return "single"


def resolve_output_names(y_pred: Any, declared: Optional[Sequence[str]]) -> List[str]:
    """Names for each flattened output of ``y_pred``.

    Args:
        y_pred: the model's output for one batch.
        declared: names given by the user or by a Keras model's ``output_names``.

    Returns:
        One name per flattened output. A dict output uses its sorted keys; a list output uses
        ``declared`` when its length fits, else ``output_1``, ``output_2``...; a single output uses
        ``declared[0]`` or ``"output"``.

    Example:
        >>> resolve_output_names({"b": 1, "a": 2}, None)
        ['a', 'b']
    """
    kind = output_structure(y_pred)
    if kind == "dict":
        return sorted(y_pred.keys())
    if kind == "list":
        if declared is not None and len(declared) == len(y_pred):
            return list(declared)
        return [f"output_{i + 1}" for i in range(len(y_pred))]
    if declared:
        return [declared[0]]
    return ["output"]


def flatten_outputs(y_pred: Any, names: Sequence[str]) -> List[Tensor]:
    """Flatten model outputs in the order of ``names``."""
    if isinstance(y_pred, Mapping):
        return [y_pred[n] for n in names]
    if isinstance(y_pred, (list, tuple)):
        return list(y_pred)
    return [y_pred]


def check_output_keys(value: Any, names: Sequence[str], argument: str) -> None:
    """Refuse a dict ``value`` (targets, losses, metrics, weights) with keys that are not output names.

    Example:
        >>> check_output_keys({"a": 1, "c": 2}, ["a", "b"], "loss")
        Traceback (most recent call last):
        ...
        ValueError: Unknown output name(s) ['c'] in `loss`. ... Received: loss keys=['a', 'c']
    """
    if not isinstance(value, Mapping):
        return
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ValueError(
            f"Unknown output name(s) {unknown} in `{argument}`. The model's outputs are "
            f"{list(names)}. Received: {argument} keys={list(value.keys())}"
        )


def flatten_targets(y: Any, names: Sequence[str], argument: str = "y") -> List[Optional[Tensor]]:
    """Align targets (or per-output sample weights) with the output names.

    A single tensor given for several outputs is replicated (Keras does this for sample weights);
    a dict may omit outputs (they get ``None``); a list must have one entry per output.

    Raises:
        ValueError: unknown keys, or a list whose length does not match the outputs.
    """
    n = len(names)
    if y is None:
        return [None] * n
    if isinstance(y, Mapping):
        check_output_keys(y, names, argument)
        return [y.get(name) for name in names]
    if isinstance(y, (list, tuple)):
        if len(y) == n:
            return list(y)
        if len(y) == 1:
            return [y[0]] * n if argument == "sample_weight" else [y[0]] + [None] * (n - 1)
        raise ValueError(
            f"`{argument}` is a list of {len(y)} entries but the model has {n} outputs "
            f"{list(names)}. Pass one entry per output, or a dict keyed by output name."
        )
    if n == 1 or argument == "sample_weight":
        return [y] * n
    raise ValueError(
        f"`{argument}` is a single array but the model has {n} outputs {list(names)}. Pass a list "
        "with one array per output, or a dict keyed by output name."
    )


def pack_outputs(flat: Sequence[Any], names: Sequence[str], kind: str) -> Any:
    """Inverse of :func:`flatten_outputs` for predictions (``kind`` from :func:`output_structure`)."""
    if kind == "dict":
        return dict(zip(names, flat))
    if kind == "list":
        return list(flat)
    return flat[0]


def first_batch_dim(x: Any) -> int:
    """Batch size of a nested input: the first dim of the first tensor found."""
    if isinstance(x, Mapping):
        for v in x.values():
            return first_batch_dim(v)
    if isinstance(x, (list, tuple)):
        for v in x:
            if v is not None:
                return first_batch_dim(v)
    return int(x.shape[0])


def map_structure(fn: Any, obj: Any) -> Any:
    """Apply ``fn`` to every leaf of a structure of lists, tuples and dicts."""
    if isinstance(obj, Mapping):
        return {k: map_structure(fn, v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(map_structure(fn, v) for v in obj)
    if isinstance(obj, list):
        return [map_structure(fn, v) for v in obj]
    return fn(obj)


def unpack_batch(batch: Any) -> tuple[Any, Any, Any]:
    """Split a batch into ``(x, y, sample_weight)`` the way Keras unpacks dataset elements.

    A tuple or list of length 1-3 is ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``; anything else
    (a tensor, a dict) is all ``x``.

    Example:
        >>> unpack_batch((1, 2))
        (1, 2, None)
    """
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None, None
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        raise ValueError(
            "A batch must be `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)`; received a "
            f"{type(batch).__name__} of length {len(batch)}."
        )
    return batch, None, None
