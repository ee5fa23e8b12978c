"""Nested structures: Keras's flattening order, output names, and targets aligned with the outputs.

A model's outputs may be a single tensor or any nesting of lists, tuples, namedtuples and dicts.
:class:`OutputStructure` records that structure from one batch: its leaves in the order
``keras.tree.flatten`` gives them (a dict by sorted keys, an ``OrderedDict`` in its own order,
sequences in order), the path to each leaf, and the names Keras logs each leaf under. Targets and
sample weights are aligned with the same leaves (:meth:`OutputStructure.targets`), following
Keras's ``CompileLoss`` reconciliation rules, so the loss and metric plans work on flat lists.

Example:
    >>> outputs = OutputStructure({"b": 1, "a": (2, 3)}, ["a1", "a2", "b"])
    >>> outputs.paths, outputs.names, outputs.loss_names
    ([('a', 0), ('a', 1), ('b',)], ['a1', 'a2', 'b'], ['a/a1', 'a/a2', 'b'])
    >>> outputs.flatten({"b": 10, "a": (20, 30)})
    [20, 30, 10]
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Mapping, Optional, Sequence, Union

import torch

from keras_bridge.typing import TensorTree
from keras_bridge.utils.tree import (
    Path,
    children,
    count_leaves,
    describe,
    flatten_values,
    flatten_with_paths,
    is_config,
    is_nested,
    map_structure,
    pack_sequence_as,
)

Tensor = torch.Tensor


class OutputKeyError(KeyError, ValueError):
    """A path of ``loss`` that the outputs do not have: Keras raises ``KeyError``, the bridge used ``ValueError``.

    Being both, it is caught by either ``except`` clause.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------- outputs
class OutputStructure:
    """The structure of a model's outputs: leaves in Keras's order, their paths and log names.

    Args:
        y_pred: the model's output for one batch (tensors, or anything in their place).
        declared: names of the flattened outputs given by the user or by a Keras model's
            ``output_names`` (used when their number fits).

    Attributes:
        kind: ``"single"``, ``"list"`` (a flat list/tuple), ``"dict"`` (a flat dict) or ``"nested"``.
        paths: the path of keys/indices to each leaf, in flattening order.
        names: one name per leaf, the prefix of its metric names: a flat dict's keys, else ``declared``
            when its length fits, else ``output_1``, ``output_2``... (``"output"`` for a single output;
            the path joined by ``_`` in a nested structure).
        loss_names: Keras's name for each leaf's loss tracker (without ``_loss``): its path joined by
            ``/``, a final index replaced by the leaf's name (kept when a nested structure has no
            declared names); a single output uses its name.
        declared: ``declared`` when it named the leaves, else ``None``.
        template: ``y_pred`` with ``None`` in place of every leaf.
    """

    def __init__(self, y_pred: TensorTree, declared: Optional[Sequence[str]] = None) -> None:
        flat = flatten_with_paths(y_pred)
        self.paths: List[Path] = [p for p, _ in flat]
        self.template: Any = map_structure(lambda _: None, y_pred)
        n = len(flat)
        if not is_nested(y_pred):
            self.kind = "single"
        elif all(not is_nested(v) for _, v in children(y_pred)):
            self.kind = "dict" if isinstance(y_pred, Mapping) else "list"
        else:
            self.kind = "nested"
        # A dict of losses maps onto the outputs by output name (outputs that are not a dict, or from_names).
        self.keyed_by_name = not isinstance(y_pred, Mapping)
        fits = declared is not None and len(declared) == n
        self.declared: Optional[List[str]] = list(declared) if (fits and declared is not None) else None
        if self.kind == "single":
            self.names = [declared[0]] if declared else ["output"]
        elif self.kind == "dict":
            self.names = [str(p[0]) for p in self.paths]
        elif self.declared is not None:
            self.names = list(self.declared)
        elif self.kind == "list":
            self.names = [f"output_{i + 1}" for i in range(n)]
        else:
            self.names = ["_".join(str(k) for k in p) for p in self.paths]
        if self.kind == "nested" and self.declared is None:
            self.loss_names = ["/".join(str(k) for k in p) for p in self.paths]
        else:
            self.loss_names = [self._loss_name(p, name) for p, name in zip(self.paths, self.names)]

    @classmethod
    def from_names(cls, names: Sequence[str]) -> OutputStructure:
        """Outputs known only by their names: a flat dict in the given order, whose keys are the names.

        A dict of losses for it is keyed by output name, as for outputs that are not a dict
        (:attr:`keyed_by_name`).
        """
        outputs = cls(OrderedDict((name, None) for name in names))
        outputs.keyed_by_name = True
        return outputs

    @staticmethod
    def _loss_name(path: Path, name: str) -> str:
        if not path:
            return name
        parts = list(path)
        if isinstance(parts[-1], int):
            parts[-1] = name
        return "/".join(str(p) for p in parts)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"OutputStructure({describe(self.template, 'X')}, names={self.names})"

    @property
    def is_mapping(self) -> bool:
        """True when the outputs are a dict at the top."""
        return isinstance(self.template, Mapping)

    def leaves_under(self, path: Path) -> List[int]:
        """Indices of the leaves at or below ``path``."""
        k = len(path)
        return [i for i, p in enumerate(self.paths) if p[:k] == path]

    def node(self, path: Path) -> Any:
        """The part of :attr:`template` at ``path``."""
        node = self.template
        for key in path:
            node = node[key]
        return node

    def describe(self, leaf: str = "X") -> str:
        return describe(self.template, leaf)

    # ---- flattening and packing ---------------------------------------------------------------
    def flatten(self, y_pred: Any) -> List[Any]:
        """The leaves of ``y_pred`` (shaped like these outputs) in flattening order."""
        if self.kind == "single":
            return [y_pred]
        if self.kind == "list":
            return list(y_pred)
        if self.kind == "dict":
            return [y_pred[p[0]] for p in self.paths]
        return flatten_values(y_pred)

    def pack(self, flat: Sequence[Any]) -> Any:
        """Inverse of :meth:`flatten`: the leaves in the structure of the outputs."""
        if self.kind == "single":
            return flat[0]
        return pack_sequence_as(self.template, flat)

    # ---- targets and sample weights -------------------------------------------------------------
    def targets(self, y: TensorTree, argument: str = "y", with_loss: Optional[Sequence[bool]] = None) -> List[Any]:
        """Align targets (or sample weights) with the leaves; ``None`` where an output has none.

        Accepted, as by Keras: the structure of the outputs (lists, tuples and namedtuples alike; a
        dict may leave outputs out); a dict keyed by output name for outputs that are not a dict; any
        structure with one leaf per output, in flattening order; or only the targets of the outputs
        that have a loss (``with_loss``), in order. One array of sample weights applies to every output.

        Raises:
            ValueError: Keras's "different structures" error, when none of these fits.
        """
        out = self._targets(y, argument, with_loss)
        if with_loss is not None and y is not None:
            missing = [self.names[i] for i, (has, t) in enumerate(zip(with_loss, out)) if has and t is None]
            if missing:
                # Keras: the targets cannot be reconciled with the outputs that have a loss.
                raise self.mismatch(y, argument, missing=missing)
        return out

    def _targets(self, y: TensorTree, argument: str, with_loss: Optional[Sequence[bool]]) -> List[Any]:
        n = len(self.paths)
        if y is None:
            return [None] * n
        sample_weight = argument == "sample_weight"
        if not is_nested(y):
            if n == 1 or sample_weight:
                return [y] * n
            return self._partial([y], y, argument, with_loss)
        if isinstance(y, Mapping) and not self.is_mapping:
            return self._by_name(y, argument)
        aligned: List[Any] = []
        if self.kind != "single" and self._align(self.template, y, aligned):
            return aligned
        flat = flatten_values(y)
        if len(flat) == n:
            return flat
        if sample_weight and len(flat) == 1:
            return flat * n
        return self._partial(flat, y, argument, with_loss)

    def _align(self, node: Any, value: Any, out: List[Any]) -> bool:
        if value is None:
            out.extend([None] * count_leaves(node))
            return True
        if not is_nested(node):
            if is_nested(value):
                return False
            out.append(value)
            return True
        if isinstance(node, Mapping):
            if not isinstance(value, Mapping) or is_config(value) or any(k not in node for k in value):
                return False
            for key, child in children(node):
                if not self._align(child, value.get(key), out):
                    return False
            return True
        if not isinstance(value, (list, tuple)) or len(value) != len(node):
            return False
        return all(self._align(child, v, out) for child, v in zip(node, value))

    def _by_name(self, y: Mapping, argument: str) -> List[Any]:
        unknown = [k for k in y if k not in self.names]
        if unknown or any(is_nested(v) for v in y.values()):
            raise self.mismatch(y, argument, unknown)
        return [y.get(name) for name in self.names]

    def _partial(self, flat: List[Any], y: TensorTree, argument: str, with_loss: Optional[Sequence[bool]]) -> List[Any]:
        active = [i for i, has in enumerate(with_loss or ()) if has]
        if not active or len(flat) != len(active):
            raise self.mismatch(y, argument)
        out: List[Any] = [None] * len(self.paths)
        for i, value in zip(active, flat):
            out[i] = value
        return out

    def mismatch(
        self,
        y: TensorTree,
        argument: str = "y",
        unknown: Optional[List[Any]] = None,
        missing: Optional[List[str]] = None,
    ) -> ValueError:
        """Keras's error for targets (or sample weights) that do not fit the outputs."""
        label = "y_true" if argument == "y" else argument
        text = (
            f"{label} and y_pred have different structures.\n{label}: {describe(y)}\n"
            f"y_pred: {describe(self.template)}\n"
        )
        if unknown:
            text += f"Unknown output name(s) {unknown} in `{argument}`: the model's outputs are {self.names}."
        if missing:
            text += f"The output(s) {missing} have a loss but no target was given for them in `{argument}`."
        return ValueError(text)


Outputs = Union[OutputStructure, Sequence[str]]


def as_output_structure(outputs: Outputs) -> OutputStructure:
    """An :class:`OutputStructure`, or one built from output names (a flat dict in that order)."""
    if isinstance(outputs, OutputStructure):
        return outputs
    return OutputStructure.from_names(list(outputs))


# ---------------------------------------------------------------------------------------- module API
def output_structure(y_pred: TensorTree, declared: Optional[Sequence[str]] = None) -> OutputStructure:
    """The :class:`OutputStructure` of one batch of model outputs (``.kind`` classifies it)."""
    return OutputStructure(y_pred, declared)


def resolve_output_names(y_pred: TensorTree, declared: Optional[Sequence[str]]) -> List[str]:
    """Names for each flattened output of ``y_pred`` (see :attr:`OutputStructure.names`).

    Example:
        >>> resolve_output_names({"b": 1, "a": 2}, None)
        ['a', 'b']
    """
    return OutputStructure(y_pred, declared).names


def flatten_outputs(y_pred: TensorTree, outputs: Outputs) -> List[Any]:
    """Flatten model outputs in Keras's order (a flat dict in the order of the given names)."""
    if isinstance(outputs, OutputStructure):
        return outputs.flatten(y_pred)
    if isinstance(y_pred, Mapping) and all(not is_nested(v) for v in y_pred.values()):
        return [y_pred[n] for n in outputs]
    return flatten_values(y_pred)


def flatten_targets(
    y: TensorTree, outputs: Outputs, argument: str = "y", with_loss: Optional[Sequence[bool]] = None
) -> List[Any]:
    """Align targets (or per-output sample weights) with the outputs: :meth:`OutputStructure.targets`."""
    return as_output_structure(outputs).targets(y, argument, with_loss)


def pack_outputs(flat: Sequence[Any], names: Sequence[str], kind: Any) -> Any:
    """Inverse of :func:`flatten_outputs` for predictions (``kind`` from :func:`output_structure`)."""
    if isinstance(kind, OutputStructure):
        return kind.pack(flat)
    if kind == "dict":
        return dict(zip(names, flat))
    if kind == "list":
        return list(flat)
    return flat[0]


def check_output_keys(value: object, names: Sequence[str], argument: str) -> None:
    """Refuse a dict ``value`` (targets, losses, metrics, weights) with keys that are not output names.

    Example:
        >>> check_output_keys({"a": 1, "c": 2}, ["a", "b"], "loss")
        Traceback (most recent call last):
        ...
        ValueError: Unknown output name(s) ['c'] in `loss`. ... Received: loss keys=['a', 'c']
    """
    if not isinstance(value, Mapping) or is_config(value):
        return
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ValueError(
            f"Unknown output name(s) {unknown} in `{argument}`. The model's outputs are "
            f"{list(names)}. Received: {argument} keys={list(value.keys())}"
        )
