"""Keras metrics as ``torchmetrics.Metric`` objects whose states are summed across processes.

``get_metric(identifier, y_true, y_pred)`` turns one ``metrics=``/``weighted_metrics=`` entry into a
:class:`BridgeMetric` (always; a user's torchmetrics object is wrapped too), whose
``update(y_true, y_pred, sample_weight=None)`` and ``compute()`` give Keras's numbers:

* a ``MeanMetricWrapper`` (accuracies, regression errors, crossentropies, hinge, KLD, Poisson, cosine
  similarity, a user's function) keeps two states, ``total`` and ``count`` (Keras's ``Mean``), and runs
  its own function per batch (Keras ops on torch tensors), or that function's torch twin where
  :mod:`~keras_bridge.compile.metrics.functional` keeps one; ``RootMeanSquaredError`` likewise;
* any other Keras metric (Precision, Recall, AUC, F1Score, MeanIoU, R2Score, ...) keeps one torchmetrics
  state per Keras variable and runs the Keras metric *statelessly* on those states
  (``stateless_update_state`` / ``stateless_result``), so the Keras object itself is never mutated
  after the build and DDP sums the states (right for Keras's built-in metrics, whose states are all
  additive counters that reset to zero);
* a ``torchmetrics.Metric`` object is wrapped: ``update(y_true, y_pred, w)`` calls
  ``metric.update(y_pred, y_true)`` (torch order), passing ``sample_weight=w`` only if its ``update``
  has a ``sample_weight`` parameter; otherwise weights are ignored (a warning, once, if some are given).
  It synchronises itself, as torchmetrics does.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Dict, List, Optional, Union

import torch
import torchmetrics
from torch import Tensor

import keras_bridge.compile.losses.functional as L
import keras_bridge.compile.metrics.functional as metric_fns
from keras_bridge.compile.losses.terms import is_binary_or_sparse_categorical
from keras_bridge.utils.attributes import PlainAttributeWrites
from keras_bridge.utils.compat import is_keras_builtin_loss, keras_registry_names, keras_wrapped_function
from keras_bridge.utils.errors import did_you_mean
from keras_bridge.utils.keras import import_keras

__all__ = [
    "BridgeMetric", "Mean", "MeanMetricWrapper", "RootMeanSquaredError", "KerasMetricWrapper",
    "TorchmetricsWrapper", "get_metric", "check_metric",
]  # fmt: skip

_ACCURACY = ("accuracy", "acc")
_CROSSENTROPY = ("crossentropy", "ce")
# In Keras's dict, but they cannot be compiled metrics (abstract, need `fn`, or take `values`).
_NOT_USABLE = ("Metric", "metric", "MeanMetricWrapper", "mean_metric_wrapper", "Mean", "mean", "Sum", "sum")


class BridgeMetric(PlainAttributeWrites, torchmetrics.Metric):
    """A Keras-named metric with sum-reduced states.

    Attributes:
        name: Keras's (unprefixed) log name.
        direction: "up", "down" or None, as Keras's ``metric._direction``.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(
        self, name: str, direction: Optional[str] = None, dtype: Optional[Union[str, torch.dtype]] = None
    ) -> None:
        super().__init__()
        self.name = name
        self.direction = direction
        self.state_dtype = L.torch_dtype(dtype) if dtype is not None else L.floatx()

    def update(self, y_true: Tensor, y_pred: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> None:
        raise NotImplementedError

    def _result(self) -> Tensor:
        """The value from the current attribute states (synced inside ``compute``, local outside)."""
        raise NotImplementedError

    def compute(self) -> Tensor:
        """Scalar result; torchmetrics syncs the states across processes first."""
        return self._result()

    def local_compute(self) -> Tensor:
        """Scalar result from this process's states only (no collective, no cache change)."""
        with torch.no_grad():
            return self._result()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(BridgeMetric):
    """Keras's ``Mean``: ``total += Σ values·w``, ``count += Σ w`` (or the number of samples).

    ``update(values, sample_weight=None)``; ``sample_weight`` may be a number, e.g. the batch size for
    the loss tracker: ``Mean(name="loss").update(loss, sample_weight=batch_size)``.
    """

    total: Tensor
    count: Tensor

    def __init__(
        self, name: str = "mean", direction: Optional[str] = None, dtype: Optional[Union[str, torch.dtype]] = None
    ) -> None:
        super().__init__(name, direction, dtype)
        self.add_state("total", torch.tensor(0.0, dtype=self.state_dtype), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=self.state_dtype), dist_reduce_fx="sum")

    def _accumulate(
        self, values: Tensor, sample_weight: Union[Tensor, float, None] = None, mask: Optional[Tensor] = None
    ) -> None:
        values, weights = metric_fns.reduce_to_samplewise_values(values, sample_weight, self.state_dtype, mask)
        # In place (what `+=` does before it rebinds the attribute): no module attribute write per batch.
        self.total.add_(values.sum().to(self.total.device))
        if weights is not None:
            self.count.add_(weights.sum().to(self.count.device))
        else:
            self.count.add_(values.shape[0] if values.dim() >= 1 else 1)

    def update(self, values: Tensor, sample_weight: Union[Tensor, float, None] = None) -> None:  # type: ignore[override]
        """Add a batch of values (any shape; reduced to one value per sample like Keras)."""
        if (
            type(sample_weight) is int
            and isinstance(values, Tensor)
            and values.dim() == 0
            and L.get_mask(values) is None
        ):
            # A loss tracker's update (a scalar, the batch size): the products and sums of the general path
            # below, whose other ops are identities on a scalar, with the same float32 rounding.
            self.total.add_((values.to(self.state_dtype) * sample_weight).to(self.total.device))
            self.count.add_(sample_weight)
            return
        self._accumulate(L.as_tensor(values, self.total), sample_weight, L.get_mask(values))

    def _result(self) -> Tensor:
        return L.divide_no_nan(self.total, self.count)


class MeanMetricWrapper(Mean):
    """Keras's ``MeanMetricWrapper``: the mean of ``fn(y_true, y_pred, **kwargs)`` per-sample values.

    ``keras_ops=True`` runs ``fn`` under a Keras device scope (for functions using Keras ops).
    """

    def __init__(
        self, fn: Callable, name: str, direction: Optional[str] = None, dtype: Optional[Union[str,torch.dtype]] = None,
        kwargs: Optional[Dict[str, Any]] = None, keras_ops: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(name, direction, dtype)
        self.fn, self.fn_kwargs, self.keras_ops = fn, dict(kwargs or {}), keras_ops

    def update(self, y_true: Tensor, y_pred: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> None:  # type: ignore[override]
        in_mask = L.get_mask(y_pred)
        if self.keras_ops:
            with L.keras_device(y_pred):
                values = self.fn(y_true, y_pred, **self.fn_kwargs)
        else:
            values = self.fn(y_true, y_pred, **self.fn_kwargs)
        sample_weight = L.apply_mask(
            None if sample_weight is None else L.as_tensor(sample_weight, y_pred, self.state_dtype),
            in_mask, self.state_dtype, "sum",
        )  # fmt: skip
        self._accumulate(L.as_tensor(values), sample_weight, L.get_mask(values))


class RootMeanSquaredError(Mean):
    """Keras's ``RootMeanSquaredError``: ``sqrt(Σ w·(y_pred - y_true)^2 / Σ w)``.

    A torch twin: Keras's own metric, run statelessly (:class:`KerasMetricWrapper`), costs about 4x it
    per batch of the multi-I/O workload of ``bench/run.py`` (32 x 1).
    """

    def __init__(self, name: str = "root_mean_squared_error", dtype: Optional[Union[str, torch.dtype]] = None) -> None:
        super().__init__(name, "down", dtype)

    def update(self, y_true: Tensor, y_pred: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> None:  # type: ignore[override]
        y_pred = L.as_tensor(y_pred).to(self.state_dtype)
        y_true = L.as_tensor(y_true, y_pred).to(device=y_pred.device, dtype=self.state_dtype)
        y_true, y_pred = L.squeeze_or_expand_to_same_rank(y_true, y_pred)
        self._accumulate(torch.square(y_pred - y_true), sample_weight)

    def _result(self) -> Tensor:
        return torch.sqrt(super()._result())


class _Shared:
    """Holds an object that ``copy.deepcopy`` must share, not copy (a Keras metric used statelessly)."""

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __deepcopy__(self, memo: Dict[int, Any]) -> _Shared:
        return self


class KerasMetricWrapper(BridgeMetric):
    """Any Keras metric, run statelessly on torchmetrics states that mirror its variables.

    Built from one example batch (Keras metrics such as R2Score or F1Score create their variables
    on their first update): if needed the Keras metric is updated once and reset.
    """

    def __init__(self, keras_metric: Any, name: str, y_true: Tensor, y_pred: Tensor) -> None:
        super().__init__(name, getattr(keras_metric, "_direction", None), keras_metric.dtype)
        if getattr(keras_metric, "_built", True) is False:
            with L.keras_device(y_pred):
                keras_metric.update_state(y_true, y_pred)
                keras_metric.reset_state()
        self._keras = _Shared(keras_metric)
        self._state_names: List[str] = []
        for i, variable in enumerate(keras_metric.variables):
            state = f"keras_{i}_{L.snake_case(variable.name.split('/')[-1])}"
            default = torch.as_tensor(variable.value).detach().clone().to("cpu")
            self.add_state(state, default, dist_reduce_fx="sum")
            self._state_names.append(state)

    @property
    def keras_metric(self) -> Any:
        """The wrapped Keras metric object (its own variables are not used)."""
        return self._keras.obj

    def _states(self) -> List[Tensor]:
        return [getattr(self, n) for n in self._state_names]

    def update(self, y_true: Tensor, y_pred: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> None:
        with L.keras_device(y_pred):
            new = self.keras_metric.stateless_update_state(self._states(), y_true, y_pred, sample_weight=sample_weight)
        for name, old, value in zip(self._state_names, self._states(), new):
            setattr(self, name, torch.as_tensor(value).detach().to(device=old.device, dtype=old.dtype))

    def _result(self) -> Tensor:
        states = self._states()
        with L.keras_device(states[0] if states else None):
            value = self.keras_metric.stateless_result(states)
        return torch.as_tensor(value)


class TorchmetricsWrapper(BridgeMetric):
    """A user's ``torchmetrics.Metric`` with the bridge interface (see the module docstring).

    The wrapped metric keeps its own states and synchronisation; this wrapper has none.
    """

    def __init__(self, metric: torchmetrics.Metric, name: str) -> None:
        super().__init__(
            name, None if metric.higher_is_better is None else ("up" if metric.higher_is_better else "down")
        )
        self.metric = metric
        try:
            self._weight_kw = "sample_weight" in inspect.signature(metric.update).parameters
        except (TypeError, ValueError):
            self._weight_kw = False
        self._warned = False

    def _wrap_update(self, update: Callable) -> Callable:  # the wrapped metric does the bookkeeping
        return update

    def _wrap_compute(self, compute: Callable) -> Callable:
        return compute

    def update(self, y_true: Tensor, y_pred: Optional[Tensor] = None, sample_weight: Optional[Tensor] = None) -> None:
        self._update_count += 1
        if sample_weight is not None and self._weight_kw:
            self.metric.update(y_pred, y_true, sample_weight=sample_weight)
            return
        if sample_weight is not None and not self._warned:
            self._warned = True
            warnings.warn(
                f"The torchmetrics metric {self.name!r} takes no sample weights; they are ignored.", stacklevel=2
            )
        self.metric.update(y_pred, y_true)

    def compute(self) -> Tensor:
        return self.metric.compute()

    def local_compute(self) -> Tensor:
        with torch.no_grad():  # the unwrapped compute: no sync, no cache
            value = torch.as_tensor(type(self.metric).compute(self.metric))
        return value.squeeze() if value.numel() == 1 else value

    def reset(self) -> None:
        self.metric.reset()
        super().reset()


# ----------------------------------------------------------------------------------------------
# Resolution


def _keras_metric_names() -> List[str]:
    return sorted(n for n in keras_registry_names("metrics") if n not in _NOT_USABLE)


def _accepted_text() -> str:
    names = ", ".join(repr(n) for n in ["accuracy", "acc", "crossentropy", "ce"] + _keras_metric_names())
    return (
        f"a string ({names}; 'accuracy'/'acc'/'crossentropy'/'ce' are resolved from the shapes, any case), "
        "a `keras.metrics.Metric` instance or class, a function `fn(y_true, y_pred)` returning per-sample "
        "values, a Keras config dict, or a `torchmetrics.Metric` instance"
    )


def check_metric(identifier: object, argument: str = "metrics") -> None:
    """Compile-time check (no tensors): raise for unknown strings and unsupported types.

    ``argument`` ("metrics" or "weighted_metrics") is the compile argument named in error messages.

    Raises:
        ValueError: None or an unknown string.
        TypeError: an object that cannot be a metric.
    """
    if identifier is None:
        raise ValueError(f"Invalid `{argument}` entry: None. Expected a metric identifier.")
    if isinstance(identifier, str) and identifier.lower() in _ACCURACY + _CROSSENTROPY:
        return
    if isinstance(identifier, torchmetrics.Metric) or (
        isinstance(identifier, type) and issubclass(identifier, torchmetrics.Metric)
    ):
        return
    keras = import_keras()
    if isinstance(identifier, str):
        if identifier in _keras_metric_names():
            return
        hint = did_you_mean(identifier, list(_ACCURACY) + list(_keras_metric_names()))
        raise ValueError(
            f"Invalid `{argument}` entry: unknown metric identifier {identifier!r}.{hint} Accepted: {_accepted_text()}."
        )
    if isinstance(identifier, (dict, keras.metrics.Metric, torchmetrics.Metric)):
        return
    if isinstance(identifier, type):
        if issubclass(identifier, (keras.metrics.Metric, torchmetrics.Metric)):
            return
        raise TypeError(
            f"Invalid `{argument}` entry: {identifier!r} is a class, not a metric. Accepted: {_accepted_text()}."
        )
    if callable(identifier):
        return
    raise TypeError(
        f"Invalid `{argument}` entry: {identifier!r} (of type {type(identifier).__name__}) is not a metric. "
        f"Accepted: {_accepted_text()}."
    )


def _direction_of_function(fn: Callable[..., Any]) -> Optional[str]:
    """Keras's ``MeanMetricWrapper`` marks wrapped Keras *losses* as "down"."""
    try:
        if is_keras_builtin_loss(fn):
            return "down"
    except TypeError:
        pass
    return None


def _from_keras_metric(metric: Any, name: str, y_true: Tensor, y_pred: Tensor) -> BridgeMetric:
    keras = import_keras()
    direction = getattr(metric, "_direction", None)
    if type(metric) is keras.metrics.RootMeanSquaredError:
        return RootMeanSquaredError(name, metric.dtype)
    plain_wrapper = type(metric).update_state is keras.metrics.MeanMetricWrapper.update_state
    wrapped = keras_wrapped_function(metric) if plain_wrapper else None
    if wrapped is not None:
        fn, kwargs = wrapped
        native = metric_fns.native_metric_for(fn)
        if native is not None:
            return MeanMetricWrapper(native, name, direction, metric.dtype, kwargs)
        return MeanMetricWrapper(fn, name, direction, metric.dtype, kwargs, keras_ops=True)
    return KerasMetricWrapper(metric, name, y_true, y_pred)


def _accuracy(name: str, y_true: Tensor, y_pred: Tensor) -> BridgeMetric:
    """The metric of "accuracy"/"acc": the ``Binary``, ``SparseCategorical`` or ``Categorical`` accuracy Keras
    picks from the shapes, as the torch twin of its function (without importing keras).

    Keras's accuracy metrics are ``MeanMetricWrapper`` objects of direction "up" and dtype floatx;
    ``BinaryAccuracy`` passes its default ``threshold=0.5`` to its function.
    """
    is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
    if is_binary:
        return MeanMetricWrapper(metric_fns.binary_accuracy, name, "up", kwargs={"threshold": 0.5})
    fn = metric_fns.sparse_categorical_accuracy if is_sparse else metric_fns.categorical_accuracy
    return MeanMetricWrapper(fn, name, "up")


def get_metric(identifier: Any, y_true: Tensor, y_pred: Tensor, argument: str = "metrics") -> BridgeMetric:
    """Resolve one metric identifier using an example batch; returned on ``y_pred``'s device.

    Names follow Keras: a string keeps the string ("acc" logs "acc"), a Keras metric its ``.name``,
    a function ``snake_case(__name__)``, a torchmetrics object its ``name`` attribute or the
    snake_case class name.
    """
    check_metric(identifier, argument)
    if isinstance(identifier, str) and identifier.lower() in _ACCURACY:
        result: BridgeMetric = _accuracy(identifier, y_true, y_pred)
    elif isinstance(identifier, str):
        keras = import_keras()
        lowered = identifier.lower()
        if lowered in _CROSSENTROPY:
            is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
            kind = "Binary" if is_binary else ("SparseCategorical" if is_sparse else "Categorical")
            obj = getattr(keras.metrics, kind + "Crossentropy")()
        else:
            obj = keras.metrics.get(identifier)
        result = _from_keras_metric(obj, identifier, y_true, y_pred)
    elif isinstance(identifier, torchmetrics.Metric) or (
        isinstance(identifier, type) and issubclass(identifier, torchmetrics.Metric)
    ):
        metric = identifier() if isinstance(identifier, type) else identifier
        name = getattr(metric, "name", None)
        result = TorchmetricsWrapper(
            metric, name if isinstance(name, str) and name else L.snake_case(type(metric).__name__)
        )
    else:
        keras = import_keras()
        obj = keras.metrics.get(identifier)  # instantiates classes, deserializes dicts
        if isinstance(obj, keras.metrics.Metric):
            result = _from_keras_metric(obj, obj.name, y_true, y_pred)
        else:  # a function: Keras wraps it in MeanMetricWrapper named snake_case(fn.__name__)
            native = metric_fns.native_metric_for(obj)
            name, direction = L.object_name(obj), _direction_of_function(obj)
            if native is not None:
                result = MeanMetricWrapper(native, name, direction)
            else:
                result = MeanMetricWrapper(obj, name, direction, keras_ops=True)
    if isinstance(y_pred, Tensor):
        result = result.to(y_pred.device)
    return result
