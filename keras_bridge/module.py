"""``KerasModule``: a LightningModule that trains, evaluates and predicts with Keras's rules.

The module owns what Keras's ``Trainer`` owns: the compiled loss and metrics, their trackers, the
optimizer spec and the History. ``fit``/``evaluate``/``predict`` hand the Keras-style arguments to
:mod:`keras_bridge.engine`, which runs a ``lightning.Trainer``.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch import nn

from keras_bridge._keras import is_keras_model
from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.structure import (
    first_batch_dim,
    flatten_outputs,
    flatten_targets,
    output_structure,
    resolve_output_names,
    unpack_batch,
)
from keras_bridge.data.arrays import GlobalBatchInfo
from keras_bridge.optimizers import get_optimizer
from keras_bridge.tracking import StageTracker

Tensor = torch.Tensor


class KerasModule(pl.LightningModule):
    """Wrap a torch module or a Keras 3 model (torch backend) for Keras-style training on Lightning.

    Args:
        model: a ``torch.nn.Module`` or a ``keras.Model`` built with the torch backend.
        output_names: names of the outputs when ``model`` returns a tuple/list (a Keras model's
            ``output_names`` and the keys of a returned dict are used otherwise).
        input_names: names accepted in a dict ``x`` (defaults: a Keras model's input names, or
            the parameters of ``forward``).

    Example:
        >>> import torch, numpy as np
        >>> module = KerasModule(torch.nn.Linear(3, 1))
        >>> module.compile(optimizer="sgd", loss="mse")
        >>> history = module.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """

    def __init__(
        self,
        model: nn.Module,
        output_names: Optional[Sequence[str]] = None,
        input_names: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(
                "Expected `model` to be a torch.nn.Module or a Keras model built with the torch "
                f"backend. Received: model of type {type(model).__name__}"
            )
        self.model = model
        self.is_keras = is_keras_model(model)
        if output_names is None and self.is_keras:
            output_names = list(getattr(model, "output_names", None) or []) or None
        self.declared_output_names = list(output_names) if output_names is not None else None
        if input_names is None and self.is_keras and getattr(model, "inputs", None):
            input_names = [t.name for t in model.inputs]
        self.input_names = list(input_names) if input_names is not None else None
        self.compiled = False
        self.loss_plan: Optional[LossPlan] = None
        self.metric_plan: Optional[MetricPlan] = None
        self.optimizer_spec: Any = None
        self.output_names: Optional[List[str]] = None
        self.output_kind: Optional[str] = None
        self.train_tracker: Optional[StageTracker] = None
        self.eval_tracker: Optional[StageTracker] = None
        self.history: Any = None
        self.stop_training = False
        self._train_logs: Optional[Dict[str, float]] = None
        self._eval_logs: Optional[Dict[str, float]] = None
        self._val_logs: Dict[str, float] = {}
        self._optimizer_cache: Optional[tuple] = None
        self._run_regularizers = self.is_keras
        self._forward_kwargs = self._forward_signature(model)

    # ------------------------------------------------------------------ compile
    def compile(  # type: ignore[override]
        self,
        optimizer: Any = "rmsprop",
        loss: Any = None,
        loss_weights: Any = None,
        metrics: Any = None,
        weighted_metrics: Any = None,
    ) -> None:
        """Configure training the Keras way.

        Args:
            optimizer: a Keras string (``"rmsprop"``), a Keras optimizer object, a
                ``keras_bridge.optimizers`` object, a torch optimizer class, or a factory
                ``params -> torch.optim.Optimizer``.
            loss: a loss identifier, a list (one per output) or a dict keyed by output name;
                ``None`` entries skip an output.
            loss_weights: a number, list or dict of per-output loss weights.
            metrics: a list, list of lists, or dict of metrics (strings, Keras metrics,
                torchmetrics metrics or functions).
            weighted_metrics: like ``metrics``; these receive sample and class weights.

        Note:
            This replaces ``torch.nn.Module.compile``; use ``torch.compile(module.model)`` for that.
        """
        self.optimizer_spec = get_optimizer(optimizer)
        self.loss_plan = LossPlan(loss, loss_weights)
        if metrics is not None or weighted_metrics is not None or self.metric_plan is None:
            # Keras keeps the previous compiled metrics when neither argument is given.
            self.metric_plan = MetricPlan(metrics, weighted_metrics)
        else:
            self.metric_plan = MetricPlan(self.metric_plan._metrics, self.metric_plan._weighted)
        if self.declared_output_names and self.is_keras:
            self.loss_plan.check_names(self.declared_output_names)
            self.metric_plan.check_names(self.declared_output_names)
        self.compiled = True
        self._optimizer_cache = None
        self.output_names = None
        self.train_tracker = None
        self.eval_tracker = None

    @property
    def built(self) -> bool:
        return self.train_tracker is not None

    # ------------------------------------------------------------------ calling the model
    @staticmethod
    def _forward_signature(model: nn.Module) -> Optional[List[str]]:
        try:
            params = inspect.signature(model.forward).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def forward(self, x: Any, training: bool = False) -> Any:  # type: ignore[override]
        """Call the wrapped model as Keras would (``training`` only reaches Keras models)."""
        if self.is_keras:
            return self.model(x, training=training)
        if isinstance(x, dict):
            return self.model(**x)
        if isinstance(x, (list, tuple)):
            return self.model(*x)
        return self.model(x)

    # ------------------------------------------------------------------ building
    def build_from_batch(self, x: Any, y: Any, y_pred: Any) -> None:
        """Resolve output names and instantiate losses/metrics from one batch (Keras's lazy build)."""
        if not self.compiled:
            raise RuntimeError(
                "You must call `compile()` before using the model: call "
                "module.compile(optimizer=..., loss=..., metrics=...) before fit() or evaluate()."
            )
        self.output_kind = output_structure(y_pred)
        names = resolve_output_names(y_pred, self.declared_output_names)
        self.output_names = names
        y_flat = flatten_targets(y, names)
        yp_flat = flatten_outputs(y_pred, names)
        assert self.loss_plan is not None and self.metric_plan is not None
        self.loss_plan.build(names)
        self.metric_plan.build(names, y_flat, [t.detach() for t in yp_flat])
        device = yp_flat[0].device if yp_flat and isinstance(yp_flat[0], Tensor) else None
        self.train_tracker = StageTracker(self.loss_plan, self.metric_plan, clone=False)
        self.eval_tracker = StageTracker(self.loss_plan, self.metric_plan, clone=True)
        if device is not None:
            self.train_tracker.to(device)
            self.eval_tracker.to(device)

    # ------------------------------------------------------------------ steps
    def _loss_and_track(self, batch: Any, training: bool) -> Tensor:
        info = None
        if isinstance(batch, tuple) and batch and isinstance(batch[-1], GlobalBatchInfo):
            batch, info = batch[:-1], batch[-1]
        x, y, sw = unpack_batch(batch)
        y_pred = self(x, training=training)
        batch_size = first_batch_dim(x)
        if batch_size == 0:
            # An empty DDP shard still joins the gradient all-reduce, with zero gradients.
            return sum(t.sum() for t in flatten_outputs(y_pred, resolve_output_names(y_pred, self.output_names))) * 0.0
        if not self.built:
            self.build_from_batch(x, y, y_pred)
        names = self.output_names
        assert names is not None and self.loss_plan is not None
        y_flat = flatten_targets(y, names)
        yp_flat = flatten_outputs(y_pred, names)
        sw_flat = flatten_targets(sw, names, "sample_weight")
        total, per_output = self.loss_plan(y_flat, yp_flat, sw_flat)
        if self._run_regularizers:
            extra = self.model.losses
            if extra:
                reg = sum(torch.sum(t.float()) for t in extra)
                total = reg if total is None else total + reg
        if total is None:
            raise ValueError(
                "No loss to compute. Provide a `loss` argument in `compile()` (or give the model "
                "regularization / add_loss losses)."
            )
        tracker = self.train_tracker if training else self.eval_tracker
        assert tracker is not None
        tracker.update(total, per_output, y_flat, yp_flat, sw_flat, batch_size)
        if info is not None and training:
            total = total * (info.world_size * batch_size / info.global_size)
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:  # type: ignore[override]
        return self._loss_and_track(batch, training=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        self._loss_and_track(batch, training=False)

    def test_step(self, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        self._loss_and_track(batch, training=False)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:  # type: ignore[override]
        x, _, _ = unpack_batch(batch)
        return self(x, training=False)

    # ------------------------------------------------------------------ logs
    def batch_logs(self, training: bool = True) -> Dict[str, float]:
        """Running means since the epoch started, from this process only (Keras batch-end logs)."""
        tracker = self.train_tracker if training else self.eval_tracker
        return tracker.results(sync=False) if tracker is not None and tracker.updated else {}

    def stage_results(self, training: bool) -> Dict[str, float]:
        """Synchronised results of a stage (a collective under DDP: call on every process)."""
        tracker = self.train_tracker if training else self.eval_tracker
        if tracker is None or (not tracker.updated and self.trainer.world_size == 1):
            return {}
        return tracker.results(sync=True)

    def reset_stage(self, training: bool) -> None:
        tracker = self.train_tracker if training else self.eval_tracker
        if tracker is not None:
            tracker.reset()

    def finish_eval_epoch(self) -> Dict[str, float]:
        """Synchronised results of the evaluation pass that just ended (computed once)."""
        if self._eval_logs is None:
            tracker = self.eval_tracker
            self._eval_logs = tracker.results(sync=True) if tracker is not None else {}
        return self._eval_logs

    def finish_train_epoch(self) -> Dict[str, float]:
        """Keras epoch logs: synchronised training results plus this epoch's ``val_*`` (computed once)."""
        if self._train_logs is None:
            logs = self.stage_results(training=True)
            logs.update(self._val_logs)
            self._train_logs = dict(sorted(logs.items()))
        return self._train_logs

    def on_train_epoch_start(self) -> None:
        self.reset_stage(training=True)
        self._train_logs = None
        self._val_logs = {}

    def on_validation_epoch_start(self) -> None:
        self.reset_stage(training=False)
        self._eval_logs = None

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        logs = self.finish_eval_epoch()
        trainer = self.trainer
        if trainer.sanity_checking:
            return
        if trainer.training or trainer.state.fn == "fit":
            self._val_logs = {f"val_{k}": v for k, v in logs.items()}
            self.log_dict(self._val_logs, sync_dist=False)
        else:
            self.log_dict(logs, sync_dist=False)

    on_test_epoch_end = on_validation_epoch_end

    def on_train_epoch_end(self) -> None:
        logs = self.finish_train_epoch()
        self.log_dict({k: v for k, v in logs.items() if not k.startswith("val_")}, sync_dist=False)

    def on_train_end(self) -> None:
        # Keras copies EMA weights into the model when fit ends (use_ema=True).
        for optimizer in self.trainer.optimizers:
            finalize = getattr(optimizer, "finalize_variable_values", None)
            if finalize is not None:
                finalize()

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> Any:
        if self.optimizer_spec is None:
            raise RuntimeError(
                "You must call `compile()` before training: call module.compile(optimizer=..., "
                "loss=...) first."
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        key = tuple(id(p) for p in params)
        # Keras keeps one optimizer per compile: momentum, step count and schedule position carry
        # over from one fit() to the next.
        if self._optimizer_cache is None or self._optimizer_cache[0] != key:
            optimizer, schedule = self.optimizer_spec.build(params)
            config: Any = optimizer
            if schedule is not None:
                from keras_bridge.schedules import KerasScheduleLR

                config = {
                    "optimizer": optimizer,
                    "lr_scheduler": {"scheduler": KerasScheduleLR(optimizer, schedule), "interval": "step"},
                }
            self._optimizer_cache = (key, config)
        return self._optimizer_cache[1]

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> Any:
        # Travels with state_dict, hence back from ddp_spawn workers and into checkpoints.
        history = getattr(self.history, "history", None)
        return {"history": history, "epoch": getattr(self.history, "epoch", None)}

    def set_extra_state(self, state: Any) -> None:
        if not state or state.get("history") is None:
            return
        if self.history is None:
            from keras_bridge._keras import import_keras

            self.history = import_keras().callbacks.History()
        self.history.history = state["history"]
        self.history.epoch = state["epoch"] or []

    # ------------------------------------------------------------------ Keras-style API
    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: Any = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: Any = True, class_weight: Any = None,
            sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: Optional[int] = None,
            validation_freq: Any = 1, trainer: Any = None) -> Any:
        """Train like ``keras.Model.fit`` and return a ``History``. See :func:`keras_bridge.engine.fit`."""
        from keras_bridge import engine

        return engine.fit(self, **{k: v for k, v in locals().items() if k not in ("self", "engine", "__class__")})

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None,
                 verbose: Any = "auto", sample_weight: Any = None, steps: Optional[int] = None,
                 return_dict: bool = False, callbacks: Any = None, trainer: Any = None) -> Any:
        """Evaluate like ``keras.Model.evaluate``: a scalar, a list in Keras's order, or a dict."""
        from keras_bridge import engine

        return engine.evaluate(self, **{k: v for k, v in locals().items() if k not in ("self", "engine", "__class__")})

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto",
                steps: Optional[int] = None, callbacks: Any = None, trainer: Any = None) -> Any:
        """Predict like ``keras.Model.predict``: NumPy arrays in the model's output structure."""
        from keras_bridge import engine

        return engine.predict(self, **{k: v for k, v in locals().items() if k not in ("self", "engine", "__class__")})
