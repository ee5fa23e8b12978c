"""Which metric applies to which output and under which log name: Keras's ``CompileMetrics`` rules.

* One output: every metric (flattened) applies to it, names unprefixed.
* Several outputs, flat (one list or dict of tensors): a list with one entry per output, or a dict
  keyed by output name (outputs left out get none); log names are ``<output>_<metric>``.
* Otherwise (nested outputs, or an argument that fits neither form): a structure mirroring the
  outputs down to each output (lists, tuples and namedtuples alike; a dict may leave outputs out),
  each entry a metric, a list of metrics or ``None``. Anything else is Keras's "Invalid `metrics`" error.
* ``weighted_metrics`` follow the same mapping and receive sample weights; a name that collides is
  renamed ``weighted_<name>``; other duplicates get ``_1``, ``_2``...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from keras_bridge.compile.metrics.stateful import BridgeMetric, check_metric, get_metric
from keras_bridge.compile.structure import Outputs, OutputStructure, as_output_structure
from keras_bridge.utils.tree import Path, children, flatten, is_config, is_nested

Tensor = torch.Tensor


def metric_name(metric: object) -> str:
    """Keras-style name of a built metric object."""
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(metric).__name__).lower()


@dataclass
class _Entry:
    index: int
    log_name: str
    base_name: str
    metric: BridgeMetric
    weighted: bool


def _check_container(value: object, argument: str) -> None:
    if value is None or is_nested(value):
        return
    raise ValueError(
        f"Expected `{argument}` argument to be a list, tuple, or dict. Received instead: "
        f"{argument}={value!r} of type {type(value).__name__}. Wrap it in a list: "
        f"{argument}=[{value!r}]"
    )


class _Mismatch(Exception):
    """Internal: ``metrics`` does not mirror the outputs (the reason is the message)."""


class MetricPlan:
    """Resolved ``metrics``/``weighted_metrics`` of a ``compile`` call.

    Example:
        >>> plan = MetricPlan(["mae"], None)
        >>> import torch
        >>> plan.build(["out"], [torch.zeros(4, 1)], [torch.ones(4, 1)])
        >>> plan.names
        ['mae']
    """

    def __init__(self, metrics: Any = None, weighted_metrics: Any = None) -> None:
        _check_container(metrics, "metrics")
        _check_container(weighted_metrics, "weighted_metrics")
        for m in flatten(metrics) + flatten(weighted_metrics):
            if m is not None:
                check_metric(m)
        self._metrics = metrics
        self._weighted = weighted_metrics
        self.entries: List[_Entry] = []
        self.built = False

    @property
    def arguments(self) -> Dict[str, Any]:
        """``metrics`` and ``weighted_metrics`` as given to ``compile``."""
        return {"metrics": self._metrics, "weighted_metrics": self._weighted}

    def check_names(self, names: Sequence[str]) -> None:
        """Raise, before any batch is seen, for a dict of single metrics none of whose keys is an output name.

        Anything else is checked at :meth:`build`, when the outputs are known (a dict may be keyed like a
        dict output rather than by the flat ``names``).
        """
        for argument, value in (("metrics", self._metrics), ("weighted_metrics", self._weighted)):
            if not isinstance(value, Mapping) or not value or any(is_nested(v) for v in value.values()):
                continue
            if any(k in names for k in value):
                continue
            raise ValueError(
                f"Invalid `{argument}`: unknown output name(s) {list(value)}. `{argument}` should be a dict or a "
                f"list matching the output names of the model {list(names)}. Received: {argument}={value}"
            )

    def _per_output(self, value: object, outputs: OutputStructure, argument: str) -> List[List[Any]]:
        n = len(outputs)
        if not value:
            return [[] for _ in range(n)]
        if n == 1:
            return [flatten(value)]
        names = outputs.names
        if outputs.kind in ("list", "dict"):
            if isinstance(value, (list, tuple)) and len(value) == n:
                return [flatten(v) for v in value]
            if isinstance(value, Mapping) and set(value.keys()) <= set(names):
                return [flatten(value.get(name)) for name in names]
        per: List[List[Any]] = [[] for _ in range(n)]
        try:
            self._mirror(value, (), outputs, per)
        except _Mismatch as reason:
            where = (
                f"the output names of the functional model {outputs.declared} or match "
                if outputs.declared is not None
                else ""
            )
            raise ValueError(
                f"{reason}\nInvalid `{argument}`. `{argument}` should contain metrics objects and either be a "
                f"dict or a list matching {where}the output structure of the model: {outputs.describe()}.\n"
                f"Received: {argument}={value}"
            ) from None
        return per

    def _mirror(self, value: object, path: Path, outputs: OutputStructure, per: List[List[Any]]) -> None:
        """Put the metrics of ``value`` (the part of the argument at ``path``) on the outputs below ``path``."""
        node = outputs.node(path)
        if value is None:
            return
        if not is_nested(node):
            per[outputs.leaves_under(path)[0]].extend(flatten(value))
            return
        n = len(outputs.leaves_under(path))
        if isinstance(node, Mapping):
            if not isinstance(value, Mapping) or is_config(value):
                raise _Mismatch(
                    f"The model has {n} outputs {self._names(outputs, path)}, a dict {list(node)}"
                    + (f" at path {path}" if path else "")
                    + f", but the argument there is a {type(value).__name__}."
                )
            unknown = [k for k in value if k not in node]
            if unknown:
                raise _Mismatch(
                    f"The model has {n} outputs {self._names(outputs, path)}: unknown output name(s) {unknown}."
                )
            for key, sub in children(value):
                self._mirror(sub, (*path, key), outputs, per)
            return
        if not isinstance(value, (list, tuple)) or len(value) != len(node):
            size = f"a list of {len(value)} entries" if isinstance(value, (list, tuple)) else type(value).__name__
            raise _Mismatch(
                f"The model has {n} outputs {self._names(outputs, path)}"
                + (f" at path {path}" if path else "")
                + f" ({len(node)} at this level) but the argument there is {size}."
            )
        for key, sub in enumerate(value):
            self._mirror(sub, (*path, key), outputs, per)

    @staticmethod
    def _names(outputs: OutputStructure, path: Path) -> List[str]:
        return [outputs.names[i] for i in outputs.leaves_under(path)]

    def build(self, outputs: Outputs, y_true: Sequence[Optional[Tensor]], y_pred: Sequence[Tensor]) -> None:
        """Instantiate the metrics for ``outputs`` (an :class:`OutputStructure` or flat output names).

        ``y_true`` and ``y_pred`` are one batch, flat in the outputs' order (shapes pick ``"accuracy"``'s kind).
        """
        outputs = as_output_structure(outputs)
        names = outputs.names
        prefix = len(names) > 1
        used: Dict[str, int] = {}
        entries: List[_Entry] = []
        for weighted, value, argument in (
            (False, self._metrics, "metrics"),
            (True, self._weighted, "weighted_metrics"),
        ):
            for i, identifiers in enumerate(self._per_output(value, outputs, argument)):
                for identifier in identifiers:
                    if identifier is None:
                        continue
                    target = y_true[i]
                    if target is None:
                        raise ValueError(
                            f"The output {names[i]!r} has metrics in `{argument}` but no target was given for it."
                        )
                    metric = get_metric(identifier, target, y_pred[i])
                    base = metric_name(metric)
                    log = f"{names[i]}_{base}" if prefix else base
                    if log in used:
                        if weighted:
                            log = f"{names[i]}_weighted_{base}" if prefix else f"weighted_{base}"
                        if log in used:
                            used[log] += 1
                            log = f"{log}_{used[log] - 1}"
                    used.setdefault(log, 1)
                    entries.append(_Entry(i, log, base, metric, weighted))
        self.entries = entries
        self.built = True

    @property
    def names(self) -> List[str]:
        return [e.log_name for e in self.entries]

    @property
    def base_names(self) -> List[str]:
        """Unprefixed names in compile order (Keras orders ``evaluate`` results with these)."""
        return [e.base_name for e in self.entries]
