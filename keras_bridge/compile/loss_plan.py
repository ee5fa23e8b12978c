"""Which loss applies to which output, with what weight: Keras's ``CompileLoss`` rules.

The user's ``loss`` and ``loss_weights`` arguments are checked when ``compile`` is called (unknown
strings, bad types) and mapped onto the model's outputs once their names are known. The total is
``sum(weight_o * loss_o)``; the per-output values are returned unweighted, as Keras 3.7+ logs them.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from keras_bridge.compile.losses.terms import LossTerm, get_loss
from keras_bridge.compile.structure import check_output_keys

Tensor = torch.Tensor


@dataclass
class _Term:
    index: int
    output_name: str
    loss: LossTerm
    weight: float


class LossPlan:
    """Resolved ``loss``/``loss_weights`` of a ``compile`` call.

    Args:
        loss: a loss identifier, a list with one entry per output, or a dict keyed by output name.
            ``None`` entries (and outputs missing from a dict) get no loss.
        loss_weights: a number, a list or a dict of per-output weights.

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
        self.built = False

    @property
    def arguments(self) -> Dict[str, Any]:
        """``loss`` and ``loss_weights`` as given to ``compile`` (what a saved compile config holds)."""
        return {"loss": self._loss, "loss_weights": self._weights}

    # ---- compile-time checks -------------------------------------------------------------
    @staticmethod
    def _resolve_identifiers(loss: Any) -> Any:
        if loss is None:
            return None
        if isinstance(loss, Mapping):
            return {k: (None if v is None else get_loss(v)) for k, v in loss.items()}
        if isinstance(loss, (list, tuple)):
            return [None if v is None else get_loss(v) for v in loss]
        return get_loss(loss)

    @staticmethod
    def _check_weights(weights: Any) -> None:
        if weights is None or isinstance(weights, (numbers.Real, Mapping, list, tuple)):
            items = (
                weights.values()
                if isinstance(weights, Mapping)
                else weights
                if isinstance(weights, (list, tuple))
                else []
            )
            for w in items:
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
        """Raise if a dict names an output that does not exist (called as soon as names are known)."""
        for arg, value in (("loss", self._loss), ("loss_weights", self._weights)):
            check_output_keys(value, names, arg)

    # ---- mapping onto outputs --------------------------------------------------------------
    def build(self, names: Sequence[str]) -> None:
        """Map losses and weights onto the outputs called ``names`` (in flattened order)."""
        self.check_names(names)
        n = len(names)
        resolved = self._resolved
        if resolved is None:
            per_output: List[Optional[LossTerm]] = [None] * n
        elif isinstance(resolved, Mapping):
            per_output = [resolved.get(name) for name in names]
        elif isinstance(resolved, list):
            if len(resolved) != n:
                raise ValueError(
                    f"`loss` is a list of {len(resolved)} entries but the model has {n} outputs "
                    f"{list(names)}. Pass one loss (or None) per output, or a dict keyed by output "
                    f"name. Received: loss={self._loss!r}"
                )
            per_output = list(resolved)
        else:
            per_output = [resolved] * n
        weights = self._weights_per_output(names, per_output)
        self.terms = [_Term(i, names[i], term, weights[i]) for i, term in enumerate(per_output) if term is not None]
        self.built = True

    def _weights_per_output(self, names: Sequence[str], per_output: Sequence[Optional[LossTerm]]) -> List[float]:
        w = self._weights
        n = len(names)
        if w is None:
            return [1.0] * n
        if isinstance(w, numbers.Real):
            return [float(w)] * n
        if isinstance(w, Mapping):
            return [float(w.get(name, 1.0)) for name in names]
        if len(w) == n:
            return [1.0 if v is None else float(v) for v in w]
        active = [i for i, t in enumerate(per_output) if t is not None]
        if len(w) == len(active):
            out = [1.0] * n
            for i, v in zip(active, w):
                out[i] = float(v)
            return out
        raise ValueError(
            f"`loss_weights` is a list of {len(w)} entries but the model has {n} outputs "
            f"{list(names)} ({len(active)} with a loss). Received: loss_weights={w!r}"
        )

    @property
    def tracker_names(self) -> List[str]:
        """Log names of the per-output loss trackers: only with two or more loss terms."""
        if len(self.terms) < 2:
            return []
        return [f"{t.output_name}_loss" for t in self.terms]

    def __call__(
        self, y_true: Sequence[Optional[Tensor]], y_pred: Sequence[Tensor], sample_weight: Sequence[Optional[Tensor]]
    ) -> Tuple[Optional[Tensor], List[Tensor]]:
        """Return the weighted total and the unweighted value of each term."""
        total: Optional[Tensor] = None
        values: List[Tensor] = []
        for t in self.terms:
            yt = y_true[t.index]
            if yt is None:
                raise ValueError(
                    f"The output {t.output_name!r} has a loss but no target was given for it. Pass "
                    "its target in `y` (a list with one array per output, or a dict keyed by "
                    "output name)."
                )
            value = t.loss(yt, y_pred[t.index], sample_weight[t.index])
            values.append(value)
            weighted = value if t.weight == 1.0 else value * t.weight
            total = weighted if total is None else total + weighted
        return total, values
