"""Which loss applies to which output, with what weight: Keras's ``CompileLoss`` rules.

The user's ``loss`` and ``loss_weights`` arguments are checked when ``compile`` is called (unknown
strings, bad types) and mapped onto the model's outputs once their structure is known
(:class:`~keras_bridge.compile.structure.OutputStructure`, from the first batch). As in Keras, ``loss``
may be:

* one loss, applied to every output;
* a structure mirroring the outputs (any nesting of lists, tuples, namedtuples and dicts; ``None``
  entries and keys left out of a dict give an output no loss);
* a flat list with one entry per output, in flattening order (sorted keys for dicts);
* a dict keyed by output name when the outputs are not a dict;
* at any output, a list of losses (``{"out": ["mse", "mae"]}``), summed; a one-element list is one loss.

``loss_weights`` is a number, the same structure as ``loss``, a flat list (one per loss, per loss
that is not ``None``, or per output), or a dict keyed by output name. The total is
``sum(weight * loss)``; the per-output values are returned unweighted, as Keras 3.7+ logs them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from keras_bridge.compile.losses.terms import LossTerm, get_loss
from keras_bridge.compile.structure import (
    OutputKeyError,
    Outputs,
    OutputStructure,
    as_output_structure,
    check_output_keys,
    flatten_outputs,
    flatten_targets,
)
from keras_bridge.typing import TensorTree
from keras_bridge.utils.tree import (
    Path,
    describe,
    flatten,
    is_config,
    is_nested,
    map_leaves,
    pack_sequence_as,
    same_structure,
)

Tensor = torch.Tensor


@dataclass
class _Term:
    index: int  # the (first) output (leaf) it applies to, in flattening order
    output_name: str
    loss: LossTerm
    weight: float
    log_name: str = ""  # Keras's name of its tracker, without "_loss"
    # Every output it applies to, and their structure (``None`` leaves) when it applies to several:
    # the loss then receives the targets and outputs in that structure, as Keras passes them.
    leaves: Tuple[int, ...] = ()
    structure: Any = None


class _Weighted:
    """A resolved loss with its weight (``None``: not given), a leaf while the structure is mapped."""

    __slots__ = ("loss", "weight")

    def __init__(self, loss: LossTerm, weight: Optional[float]) -> None:
        self.loss = loss
        self.weight = weight


def _weighted(loss: Any, weight: Any) -> Optional[_Weighted]:
    if loss is None:
        return None
    return _Weighted(loss, None if weight is None else float(weight))


def _is_flat_mapping(value: object) -> bool:
    """A dict whose values are single entries: keyed by flat output names rather than by a structure."""
    return isinstance(value, Mapping) and not is_config(value) and all(not is_nested(v) for v in value.values())


class LossPlan:
    """Resolved ``loss``/``loss_weights`` of a ``compile`` call.

    Args:
        loss: a loss identifier, or a structure of them (see the module docstring); ``None``
            entries get no loss.
        loss_weights: a number, or a structure of per-loss / per-output weights.

    Attributes:
        terms: after :meth:`build`, one term per loss, in Keras's order.
        outputs: after :meth:`build`, the :class:`OutputStructure` it was built for.

    Example:
        >>> plan = LossPlan({"b": "mse"}, {"b": 2.0})
        >>> plan.build(["a", "b"])
        >>> [(t.output_name, t.weight) for t in plan.terms]
        [('b', 2.0)]
    """

    def __init__(self, loss: Any, loss_weights: Any = None) -> None:
        self._loss = loss
        self._weights = loss_weights
        self._resolved = self._resolve_identifiers(loss)
        self._check_weights(loss_weights)
        self.terms: List[_Term] = []
        self.outputs: Optional[OutputStructure] = None
        # Per output (flattening order), after build: whether some loss applies to it.
        self.output_has_loss: List[bool] = []
        self.built = False

    @property
    def arguments(self) -> Dict[str, Any]:
        """``loss`` and ``loss_weights`` as given to ``compile`` (what a saved compile config holds)."""
        return {"loss": self._loss, "loss_weights": self._weights}

    # ---- compile-time checks -------------------------------------------------------------
    @staticmethod
    def _resolve_identifiers(loss: Any) -> Any:
        return map_leaves(lambda v: None if v is None else get_loss(v), loss)

    @staticmethod
    def _check_weights(weights: Any) -> None:
        if weights is None or isinstance(weights, numbers.Real) or is_nested(weights):
            for w in flatten(weights) if is_nested(weights) else []:
                if w is not None and not isinstance(w, numbers.Real):
                    raise TypeError(
                        f"Expected each entry of `loss_weights` to be a number. Received: loss_weights={weights!r}"
                    )
            return
        raise TypeError(
            "Expected `loss_weights` to be a number, a list or a dict keyed by output name. "
            f"Received: loss_weights={weights!r} of type {type(weights).__name__}"
        )

    def check_names(self, names: Sequence[str]) -> None:
        """Raise, before any batch is seen, for a dict that can fit no output of a model with these names.

        ``names`` are the flat output names (a Keras model's ``output_names``). A dict of single entries
        none of whose keys is an output name is refused here with Keras's message. Anything else waits
        for :meth:`build`, where the outputs are known: a dict may be keyed like a dict output (whose
        keys need not be the names), and Keras's error for an unknown key depends on the structure.
        """
        for argument, value in (("loss", self._loss), ("loss_weights", self._weights)):
            if not _is_flat_mapping(value) or not value or any(k in names for k in value):
                continue
            raise ValueError(
                f"Expected keys {list(names)} in {argument} dict, but found {argument}.keys()="
                f"{list(value.keys())}. Unknown output name(s) {list(value.keys())} in `{argument}`."
            )

    # ---- mapping onto outputs --------------------------------------------------------------
    def build(self, outputs: Outputs) -> None:
        """Map losses and weights onto ``outputs`` (an :class:`OutputStructure`, or flat output names).

        Raises:
            ValueError: the structure of ``loss`` or ``loss_weights`` does not fit the outputs
                (an :class:`OutputKeyError`, also a ``KeyError``, for a path the outputs do not have).
        """
        outputs = as_output_structure(outputs)
        placed: List[Tuple[Path, _Weighted]] = []
        per_output: Optional[List[Any]] = None
        loss, weights = self._resolved, self._weights
        if loss is not None:
            by_name = isinstance(loss, Mapping) and outputs.keyed_by_name
            if by_name:
                # Keras: a dict of losses for outputs that are not a dict is keyed by output name.
                unknown = [k for k in loss if k not in outputs.names]
                if unknown:
                    raise ValueError(
                        f"Expected keys {outputs.names} in loss dict, but found loss.keys()={list(loss.keys())}. "
                        f"Unknown output name(s) {unknown} in `loss`."
                    )
                loss = [loss.get(name) for name in outputs.names]
                if _is_flat_mapping(weights):
                    check_output_keys(weights, outputs.names, "loss_weights")
                    weights = [weights.get(name) for name in outputs.names]
            weighted, per_output = self._pair_weights(loss, weights, outputs)
            if by_name:
                for i, entry in enumerate(weighted):
                    self._place(entry, outputs.paths[i], outputs, placed)
            elif not is_nested(weighted):
                # One loss for every output, in the order of the outputs' own structure (as Keras maps it).
                self._place(map_leaves(lambda _: weighted, outputs.template), (), outputs, placed)
            else:
                self._place(weighted, (), outputs, placed)
        terms = []
        for path, entry in placed:
            leaves = outputs.leaves_under(path)
            node = outputs.node(path)
            weight = entry.weight
            if weight is None and per_output is not None and not is_nested(node):
                weight = per_output[leaves[0]]
            weight = 1.0 if weight is None else float(weight)
            name = self._term_name(path, outputs)
            output_name = outputs.names[leaves[0]] if not is_nested(node) else name
            structure = node if is_nested(node) else None
            terms.append(_Term(leaves[0], output_name, entry.loss, weight, name, tuple(leaves), structure))
        self.terms = terms
        used = {i for t in terms for i in t.leaves}
        self.output_has_loss = [i in used for i in range(len(outputs))]
        self.outputs = outputs
        self.built = True

    def _pair_weights(self, loss: Any, weights: Any, outputs: OutputStructure) -> Tuple[Any, Optional[List[Any]]]:
        """``loss`` with :class:`_Weighted` leaves, and weights left to apply per output (or ``None``)."""
        if weights is None or isinstance(weights, numbers.Real):
            return map_leaves(lambda v: _weighted(v, weights), loss), None
        if same_structure(loss, weights):
            flat = [_weighted(v, w) for v, w in zip(flatten(loss), flatten(weights))]
            return pack_sequence_as(loss, flat), None
        unweighted = map_leaves(lambda v: _weighted(v, None), loss)
        if _is_flat_mapping(weights):
            check_output_keys(weights, outputs.names, "loss_weights")
            return unweighted, [weights.get(name) for name in outputs.names]
        flat_loss, flat_weights = flatten(loss), flatten(weights)
        if len(flat_weights) == len(flat_loss):
            flat = [_weighted(v, w) for v, w in zip(flat_loss, flat_weights)]
            return pack_sequence_as(loss, flat), None
        active = [i for i, v in enumerate(flat_loss) if v is not None]
        if len(flat_weights) == len(active):
            it = iter(flat_weights)
            return pack_sequence_as(loss, [None if v is None else _weighted(v, next(it)) for v in flat_loss]), None
        if len(flat_weights) == len(outputs):
            return unweighted, list(flat_weights)
        raise ValueError(
            f"`loss_weights` must match the number of losses, got {len(flat_loss)} losses and "
            f"{len(flat_weights)} weights: `loss_weights` is a list of {len(flat_weights)} entries but the "
            f"model has {len(outputs)} outputs {outputs.names} ({len(active)} with a loss). "
            f"Received: loss_weights={self._weights!r}"
        )

    def _place(self, entry: Any, path: Path, outputs: OutputStructure, out: List[Tuple[Path, _Weighted]]) -> None:
        """Map the part ``entry`` of ``loss`` onto the outputs at ``path``, by Keras's ``CompileLoss`` rules.

        A single loss applies to the output at ``path``, a tensor or a whole structure (the loss then
        receives that structure). A list or tuple of single losses, one per output below ``path``, is
        put in the outputs' structure; another list or tuple whose type the output there does not have
        holds several losses for the same ``path`` (summed). Otherwise ``entry`` mirrors the outputs.
        """
        if entry is None:
            return
        node, leaves = outputs.node(path), outputs.leaves_under(path)
        if isinstance(entry, _Weighted):
            if is_nested(node) and not entry.loss.takes_structures:
                raise ValueError(
                    f"The `loss` entry at path {path} is a single loss, but the model's output there is a "
                    f"structure of {len(leaves)} tensors {describe(node, 'X')}, and {entry.loss.name!r} takes "
                    "one tensor. Give one loss per output (a list or a structure like the outputs), or a "
                    f"loss function that takes the structure. Received: loss={self._loss!r}"
                )
            out.append((path, entry))
            return
        if isinstance(entry, (list, tuple)):
            if all(not is_nested(e) for e in entry) and len(entry) == len(leaves):
                entry = pack_sequence_as(node, list(entry))
                if not is_nested(entry):
                    self._place(entry, path, outputs, out)
                    return
            elif not isinstance(node, type(entry)):
                if is_nested(node) and any(isinstance(e, _Weighted) and not e.loss.takes_structures for e in entry):
                    raise ValueError(
                        f"`loss` is a list of {len(entry)} entries but the model has {len(leaves)} outputs "
                        f"{[outputs.names[i] for i in leaves]}" + (f" at path {path}" if path else "") + ": "
                        f"pass one loss (or None) per output, a structure like the outputs' "
                        f"{describe(node, 'X')}, or a dict keyed by output name. Received: loss={self._loss!r}"
                    )
                for e in entry:
                    self._place(e, path, outputs, out)
                return
        if not isinstance(node, type(entry)):
            raise self._missing_path(path, outputs, labels=False)
        if isinstance(entry, Mapping):
            unknown = [k for k, e in entry.items() if e is not None and k not in node]
            if unknown:
                raise self._missing_path((*path, unknown[0]), outputs, labels=True, unknown=unknown)
            items = list(entry.items())
        else:
            items = list(enumerate(entry))
            if len(entry) > len(node):
                raise self._missing_path((*path, len(node)), outputs, labels=True)
        for key, e in items:
            if e is not None:
                self._place(e, (*path, key), outputs, out)

    @staticmethod
    def _term_name(path: Path, outputs: OutputStructure) -> str:
        """Keras's name for the tracker of a loss at ``path`` (without ``_loss``).

        At one output, :attr:`OutputStructure.loss_names`; on a structure, the path joined by ``/``, or at
        the top the output names (a dict's keys) joined by ``_``.
        """
        node, leaves = outputs.node(path), outputs.leaves_under(path)
        if not is_nested(node):
            return outputs.loss_names[leaves[0]]
        if path:
            return "/".join(str(k) for k in path)
        if isinstance(node, Mapping):
            return "_".join(str(k) for k in node.keys())
        return "_".join(outputs.names[i] for i in leaves)

    @staticmethod
    def _missing_path(
        path: Path, outputs: OutputStructure, labels: bool, unknown: Optional[List[Any]] = None
    ) -> OutputKeyError:
        where = "the model's output (`y_pred`)"
        if labels:
            where = "either the model's output (`y_pred`) or in the labels (`y_true`)"
        detail = f" Unknown output name(s) {unknown} in `loss`." if unknown else ""
        return OutputKeyError(
            f"The path: {path} in the `loss` argument, can't be found in {where}.{detail} The model's outputs "
            f"are {outputs.describe()} (names {outputs.names})."
        )

    @staticmethod
    def _structured(t: _Term, y_true: Sequence[Any], y_pred: Sequence[Any], sample_weight: Sequence[Any]) -> tuple:
        """Targets, outputs and sample weights of a loss on a structure, packed in that structure.

        One sample-weight array for every output below it stays one array, as Keras passes it.
        """
        targets = [y_true[i] for i in t.leaves]
        weights = [sample_weight[i] for i in t.leaves]
        yt = None if any(v is None for v in targets) else pack_sequence_as(t.structure, targets)
        sw = weights[0] if all(w is weights[0] for w in weights) else pack_sequence_as(t.structure, weights)
        return yt, pack_sequence_as(t.structure, [y_pred[i] for i in t.leaves]), sw

    @property
    def tracker_names(self) -> List[str]:
        """Log names of the per-output loss trackers: only with two or more loss terms."""
        if len(self.terms) < 2:
            return []
        return [f"{t.log_name or t.output_name}_loss" for t in self.terms]

    def flatten_batch(
        self, y: TensorTree, y_pred: TensorTree, sample_weight: TensorTree
    ) -> Tuple[List[Any], List[Any], List[Any]]:
        """A batch's targets, outputs and sample weights as the flat lists :meth:`__call__` takes (once built)."""
        outputs = self.outputs
        assert outputs is not None
        y_flat = flatten_targets(y, outputs, with_loss=self.output_has_loss)
        return y_flat, flatten_outputs(y_pred, outputs), flatten_targets(sample_weight, outputs, "sample_weight")

    def __call__(
        self, y_true: Sequence[Optional[Tensor]], y_pred: Sequence[Tensor], sample_weight: Sequence[Optional[Tensor]]
    ) -> Tuple[Optional[Tensor], List[Tensor]]:
        """Return the weighted total and the unweighted value of each term (flat lists, in output order)."""
        total: Optional[Tensor] = None
        values: List[Tensor] = []
        for t in self.terms:
            if t.structure is None:
                yt, yp, sw = y_true[t.index], y_pred[t.index], sample_weight[t.index]
            else:
                yt, yp, sw = self._structured(t, y_true, y_pred, sample_weight)
            if yt is None:
                raise ValueError(
                    f"The output {t.output_name!r} has a loss but no target was given for it. Pass "
                    "its target in `y` (the structure of the outputs, a list with one array per output, "
                    "or a dict keyed by output name)."
                )
            value = t.loss(yt, yp, sw)
            values.append(value)
            weighted = value if t.weight == 1.0 else value * t.weight
            total = weighted if total is None else total + weighted
        return total, values


def add_model_losses(total: Optional[Tensor], losses: Sequence[Any]) -> Optional[Tensor]:
    """``total`` plus the model's own losses (regularization, ``add_loss``), each summed, as Keras adds them.

    Example:
        >>> add_model_losses(torch.tensor(1.0), [torch.tensor([0.5, 0.5])]), add_model_losses(None, [])
        (tensor(2.), None)
    """
    if not losses:
        return total
    reg = torch.stack([torch.sum(t.float()) for t in losses]).sum()
    return reg if total is None else total + reg
