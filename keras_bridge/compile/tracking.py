"""The per-stage bookkeeping behind Keras logs: the loss trackers and the compiled metrics.

Training and validation keep separate copies, because Lightning runs validation *inside* the
training epoch: the training epoch's results must survive the validation pass.
All states are torchmetrics states with sum reductions, so ``results(sync=True)`` gives the same
numbers on every process under DDP, and ``results(sync=False)`` gives this process's running means
without any collective (what Keras shows at batch end).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.metrics.stateful import BridgeMetric, Mean

Tensor = torch.Tensor


class StageTracker(nn.Module):
    """Loss trackers and metrics of one stage (train, or validation/test)."""

    loss: Mean
    output_losses: nn.ModuleList
    metrics: nn.ModuleList

    def __init__(self, loss_plan: Optional[LossPlan], metric_plan: Optional[MetricPlan], clone: bool) -> None:
        super().__init__()
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

    def results(self, sync: bool) -> Dict[str, float]:
        """Current values as a sorted dict of Python floats (one host transfer for all)."""
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
        self.updated = False

    @property
    def names(self) -> List[str]:
        return list(self._names)
