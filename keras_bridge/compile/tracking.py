"""The per-stage bookkeeping behind Keras logs: the loss trackers and the compiled metrics.

Training and validation keep separate copies, because Lightning runs validation *inside* the
training epoch: the training epoch's results must survive the validation pass.
All states are torchmetrics states with sum reductions, so ``results(sync=True)`` gives the same
numbers on every process under DDP, and ``results(sync=False)`` gives this process's running means
without any collective (what Keras shows at batch end).

A Keras model whose class overrides ``compute_loss`` or ``compute_metrics`` is trained the way Keras's
``train_step`` trains it (:class:`KerasHooks`): the override gives the loss, and the logs are what
``compute_metrics`` returns, as Keras's ``fit`` logs them.
"""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import nn

from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.metrics.stateful import BridgeMetric, Mean
from keras_bridge.typing import TensorTree
from keras_bridge.utils.attributes import PlainAttributeWrites
from keras_bridge.utils.compat import keras_loss_tracker
from keras_bridge.utils.keras import import_keras
from keras_bridge.utils.overrides import overridden

if TYPE_CHECKING:
    import keras

Tensor = torch.Tensor


def _accepts_training(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _detached(logs: Optional[Mapping[str, Any]]) -> Any:
    if isinstance(logs, Mapping):
        return {k: _detached(v) for k, v in logs.items()}
    return logs.detach() if isinstance(logs, Tensor) else logs


def pythonify_logs(logs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Logs as Keras's ``fit`` records them: nested dicts flattened, values as Python floats where possible."""
    out: Dict[str, Any] = {}
    for key, value in (logs or {}).items():
        if isinstance(value, Mapping):
            out.update(pythonify_logs(value))
            continue
        try:
            out[key] = float(value.detach().cpu() if isinstance(value, Tensor) else value)
        except (TypeError, ValueError, RuntimeError):
            out[key] = value
    return dict(sorted(out.items()))


class KerasHooks:
    """A Keras model's own ``compute_loss`` / ``compute_metrics``, run as Keras's ``train_step`` runs them.

    Keras's step is: ``loss = model.compute_loss(x, y, y_pred, sample_weight, training=...)``, the
    model's loss tracker updated with it, then ``logs = model.compute_metrics(x, y, y_pred,
    sample_weight=...)``; at the end of the epoch the model's metric results replace the last logs when
    they have the same keys.

    Args:
        model: the Keras model.
        loss: its class overrides ``compute_loss``.
        metrics: its class overrides ``compute_metrics``.
        keras_logs: the model is compiled by Keras with every compile argument, so the logs are its
            own (``compute_metrics``, even Keras's, and its loss tracker); otherwise the bridge's trackers
            give the logs and an overridden ``compute_metrics`` adds its entries.
    """

    def __init__(self, model: keras.Model, loss: bool, metrics: bool, keras_logs: bool) -> None:
        self.model = model
        self.loss = loss
        self.metrics = metrics
        self.keras_logs = keras_logs
        self._loss_has_training = _accepts_training(model.compute_loss)

    @classmethod
    def detect(cls, model: keras.Model, keras_logs: bool) -> Optional[KerasHooks]:
        """The hooks of ``model`` when its class overrides ``compute_loss`` or ``compute_metrics``, else ``None``."""
        redefined = overridden(model, import_keras().Model, ("compute_loss", "compute_metrics"))
        loss, metrics = "compute_loss" in redefined, "compute_metrics" in redefined
        if not (loss or metrics):
            return None
        return cls(model, loss, metrics, keras_logs)

    @property
    def runs_keras_loss(self) -> bool:
        """Whether the loss comes from the model's ``compute_loss`` (its override, or Keras's for Keras's logs)."""
        return self.loss or self.keras_logs

    @property
    def runs_keras_metrics(self) -> bool:
        """Whether ``compute_metrics`` runs each step (its override, or Keras's for Keras's logs)."""
        return self.metrics or self.keras_logs

    def compute_loss(
        self, x: TensorTree, y: TensorTree, y_pred: TensorTree, sample_weight: TensorTree, training: bool
    ) -> Tensor:
        """The model's ``compute_loss`` (an override written before Keras 3.3 has no ``training``)."""
        if self._loss_has_training:
            return self.model.compute_loss(x, y, y_pred, sample_weight, training=training)
        return self.model.compute_loss(x, y, y_pred, sample_weight)

    def step_logs(
        self, x: TensorTree, y: TensorTree, y_pred: TensorTree, sample_weight: TensorTree, loss: Tensor, batch_size: int
    ) -> tuple:
        """Keras's end of a step: ``(logs of this step, logs if the epoch ended now)``."""
        if self.keras_logs:
            # Keras's train_step feeds its own loss tracker, which Keras's compute_metrics reports as "loss".
            tracker = keras_loss_tracker(self.model)
            if tracker is not None:
                tracker.update_state(loss.detach(), sample_weight=batch_size)
        logs = self.model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        if not self.metrics or not isinstance(logs, Mapping):
            return logs, logs
        results = self.model.get_metrics_result()
        return logs, (results if set(logs) == set(results) else logs)

    def reset(self) -> None:
        """Keras resets every metric of the model when an epoch or an evaluation starts."""
        self.model.reset_metrics()


class StageTracker(PlainAttributeWrites, nn.Module):
    """Loss trackers and metrics of one stage (train, or validation/test)."""

    loss: Mean
    output_losses: nn.ModuleList
    metrics: nn.ModuleList

    def __init__(
        self,
        loss_plan: Optional[LossPlan],
        metric_plan: Optional[MetricPlan],
        clone: bool,
        hooks: Optional[KerasHooks] = None,
    ) -> None:
        super().__init__()
        self.hooks = hooks
        # With hooks: the logs compute_metrics returned at the last step, and what the epoch would log.
        self._step_logs: Optional[Dict[str, Any]] = None
        self._epoch_logs: Optional[Dict[str, Any]] = None
        self.loss = Mean(name="loss")
        names = loss_plan.tracker_names if loss_plan is not None else []
        self.output_loss_names: List[str] = names
        self.output_losses = nn.ModuleList([Mean(name=n) for n in names])
        entries = metric_plan.entries if metric_plan is not None else []
        self.metric_names: List[str] = [e.log_name for e in entries]
        self._indices = [e.index for e in entries]
        self._weighted = [e.weighted for e in entries]
        metrics = [copy.deepcopy(e.metric) if clone else e.metric for e in entries]
        self.metrics = nn.ModuleList(metrics)
        self._names = ["loss"] + self.output_loss_names + self.metric_names
        self._order = sorted(range(len(self._names)), key=lambda i: self._names[i])
        self.updated = False

    @staticmethod
    def keras_hooks(model: keras.Model, keras_logs: bool) -> Optional[KerasHooks]:
        """:meth:`KerasHooks.detect`: the hooks of a Keras model that overrides its step methods, or ``None``."""
        return KerasHooks.detect(model, keras_logs)

    def update_losses(self, total: Tensor, output_losses: Sequence[Tensor], batch_size: int) -> None:
        """Add one batch's total loss and per-output losses to the running means (detached here)."""
        self.loss.update(total.detach(), batch_size)
        for tracker, value in zip(self.output_losses, output_losses):
            tracker.update(value.detach(), batch_size)  # type: ignore[operator]
        self.updated = True

    def update_metrics(
        self, y_true: Sequence[Optional[Tensor]], y_pred: Sequence[Tensor], sample_weight: Sequence[Optional[Tensor]]
    ) -> None:
        """Update the compiled metrics with one batch (flat, in output order)."""
        for metric, i, weighted in zip(self.metrics, self._indices, self._weighted):
            metric.update(y_true[i], y_pred[i].detach(), sample_weight[i] if weighted else None)  # type: ignore[operator]
        self.updated = True

    def update_keras_logs(
        self, x: TensorTree, y: TensorTree, y_pred: TensorTree, sample_weight: TensorTree, loss: Tensor, batch_size: int
    ) -> None:
        """Run the model's ``compute_metrics`` for one batch and keep its logs (with :class:`KerasHooks`)."""
        assert self.hooks is not None
        step, epoch = self.hooks.step_logs(x, y, y_pred, sample_weight, loss, batch_size)
        self._step_logs, self._epoch_logs = _detached(step), _detached(epoch)
        self.updated = True

    def results(self, sync: bool) -> Dict[str, float]:
        """Current values as a sorted dict of Python floats (one host transfer for all).

        With :class:`KerasHooks`, the logs of the model's ``compute_metrics`` (this process's own, as
        Keras's): the last step's when ``sync`` is false (batch logs), the epoch's when it is true.
        """
        if self.hooks is not None and self._step_logs is not None:
            logs = pythonify_logs(self._epoch_logs if sync else self._step_logs)
            if self.hooks.keras_logs:
                return logs
            return dict(sorted({**self._tracked_results(sync), **logs}.items()))
        return self._tracked_results(sync)

    def _tracked_results(self, sync: bool) -> Dict[str, float]:
        trackers: List[BridgeMetric] = [self.loss, *self.output_losses, *self.metrics]
        values = [m.compute() if sync else m.local_compute() for m in trackers]
        flat = torch.stack(
            [torch.as_tensor(v, dtype=torch.float32, device=self.loss.total.device).reshape(()) for v in values]
        )
        numbers = flat.tolist()
        return {self._names[i]: numbers[i] for i in self._order}

    def reset(self) -> None:
        self.loss.reset()
        for m in self.output_losses:
            m.reset()  # type: ignore[operator]
        for m in self.metrics:
            m.reset()  # type: ignore[operator]
        if self.hooks is not None:
            self.hooks.reset()
            self._step_logs = self._epoch_logs = None
        self.updated = False

    @property
    def names(self) -> List[str]:
        return list(self._names)
