"""Which metric applies to which output and under which log name: Keras's ``CompileMetrics`` rules.

* One output: every metric (flattened) applies to it, names unprefixed.
* Several outputs: a list with one entry per output, or a dict keyed by output name; log names are
  ``<output>_<metric>``. Any other list is an error (Keras 3 behaviour).
* ``weighted_metrics`` follow the same mapping and receive sample weights; a name that collides is
  renamed ``weighted_<name>``; other duplicates get ``_1``, ``_2``...
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from keras_bridge.compile.metrics.stateful import BridgeMetric, check_metric, get_metric
from keras_bridge.compile.structure import check_output_keys

Tensor = torch.Tensor


def metric_name(metric: Any) -> str:
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


def _check_container(value: Any, argument: str) -> None:
    if value is None or isinstance(value, (list, tuple, Mapping)):
        return
    raise ValueError(
        f"Expected `{argument}` argument to be a list, tuple, or dict. Received instead: "
        f"{argument}={value!r} of type {type(value).__name__}. Wrap it in a list: "
        f"{argument}=[{value!r}]"
    )


def _flatten(value: Any) -> List[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out: List[Any] = []
        for v in value:
            out.extend(_flatten(v))
        return out
    if isinstance(value, Mapping):
        out = []
        for v in value.values():
            out.extend(_flatten(v))
        return out
    return [value]


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
        for m in _flatten(metrics) + _flatten(weighted_metrics):
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
        """Raise for dict keys that are not output names."""
        for arg, value in (("metrics", self._metrics), ("weighted_metrics", self._weighted)):
            check_output_keys(value, names, arg)

    def _per_output(self, value: Any, names: Sequence[str], argument: str) -> List[List[Any]]:
        n = len(names)
        if value is None:
            return [[] for _ in range(n)]
        if n == 1:
            return [_flatten(value)]
        if isinstance(value, Mapping):
            return [_flatten(value.get(name)) for name in names]
        if len(value) == n:
            return [_flatten(v) for v in value]
        raise ValueError(
            f"Invalid `{argument}` for a model with {n} outputs {list(names)}: pass a list with one "
            f"entry (a metric, a list of metrics or None) per output, or a dict keyed by output "
            f"name. Received: {argument}={value!r}"
        )

    def build(self, names: Sequence[str], y_true: Sequence[Optional[Tensor]], y_pred: Sequence[Tensor]) -> None:
        """Instantiate the metrics for outputs ``names`` using one batch of targets/predictions."""
        self.check_names(names)
        prefix = len(names) > 1
        used: Dict[str, int] = {}
        entries: List[_Entry] = []
        for weighted, value, argument in (
            (False, self._metrics, "metrics"),
            (True, self._weighted, "weighted_metrics"),
        ):
            for i, identifiers in enumerate(self._per_output(value, names, argument)):
                for identifier in identifiers:
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
