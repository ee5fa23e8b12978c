"""A :class:`~keras_bridge.KerasModule`'s logs: Keras's batch and epoch logs, and what reaches the loggers.

Keras's batch logs are running means since the epoch started (from this process only); its epoch logs
are synchronised across processes and computed once per epoch (:class:`EpochLogs` keeps them), with the
epoch's ``val_*`` values in the training logs. The Trainer's loggers get the compile arguments (as
configs), the batch size and the epochs once per fit, the epoch logs at each epoch end, and the batch
logs as ``batch_<name>`` (Keras TensorBoard's tags) on the steps Lightning logs.

The functions here are bound as ``KerasModule`` methods of the same names.

Example:
    >>> import torch, numpy as np
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    >>> module.ordered_results({"mae": 0.5, "loss": 0.25})
    [0.25, 0.5]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

from keras_bridge.configs import COMPILE_ARGUMENTS
from keras_bridge.utils.compat import logging_due

if TYPE_CHECKING:
    from keras_bridge.compile.tracking import StageTracker
    from keras_bridge.protocols import BridgeModule

__all__ = [
    "EpochLogs",
    "batch_logs",
    "finish_eval_epoch",
    "finish_train_epoch",
    "log_batch_logs",
    "log_eval_epoch",
    "log_hyperparameters",
    "log_train_epoch",
    "ordered_results",
    "reset_stage",
    "stage_results",
]


@dataclass
class EpochLogs:
    """The epoch logs of the epoch in flight, each computed once."""

    train: Optional[Dict[str, float]] = None  # Keras's epoch logs of the training epoch, val_* included
    train_epoch: Optional[int] = None  # the epoch `train` belongs to
    eval: Optional[Dict[str, float]] = None  # the evaluation pass that just ended
    val: Dict[str, float] = field(default_factory=dict)  # this epoch's val_* values


def _tracker(module: BridgeModule, training: bool) -> Optional[StageTracker]:
    return module.train_tracker if training else module.eval_tracker


def batch_logs(module: BridgeModule, training: bool = True) -> Dict[str, float]:
    """Running means since the epoch started, from this process only (Keras batch-end logs)."""
    tracker = _tracker(module, training)
    return tracker.results(sync=False) if tracker is not None and tracker.updated else {}


def stage_results(module: BridgeModule, training: bool) -> Dict[str, float]:
    """Synchronised results of a stage (a collective under DDP: call on every process)."""
    tracker = _tracker(module, training)
    if tracker is None or (not tracker.updated and module.trainer.world_size == 1):
        return {}
    return tracker.results(sync=True)


def reset_stage(module: BridgeModule, training: bool) -> None:
    """Start a stage's running means afresh."""
    tracker = _tracker(module, training)
    if tracker is not None:
        tracker.reset()


def finish_eval_epoch(module: BridgeModule) -> Dict[str, float]:
    """Synchronised results of the evaluation pass that just ended (computed once)."""
    logs = module.epoch_logs
    if logs.eval is None:
        tracker = module.eval_tracker
        logs.eval = tracker.results(sync=True) if tracker is not None else {}
    return logs.eval


def finish_train_epoch(module: BridgeModule) -> Dict[str, float]:
    """Keras epoch logs: synchronised training results plus this epoch's ``val_*`` (computed once)."""
    logs = module.epoch_logs
    if logs.train is None:
        if module.keras_step is not None:
            logs.train = module.keras_step.train_logs.with_validation(logs.val)
        else:
            results = module.stage_results(training=True)
            results.update(logs.val)
            logs.train = dict(sorted(results.items()))
        logs.train_epoch = module.trainer.current_epoch
    return logs.train


def log_eval_epoch(module: BridgeModule) -> None:
    """Send the evaluation pass's logs to the loggers (as ``val_*`` within a fit)."""
    logs = module.finish_eval_epoch()
    trainer = module.trainer
    if trainer.sanity_checking:
        return
    if trainer.training or trainer.state.fn == "fit":
        module.epoch_logs.val = {f"val_{k}": v for k, v in logs.items()}
        module.log_dict(module.epoch_logs.val, sync_dist=False)
    else:
        module.log_dict(logs, sync_dist=False)


def log_train_epoch(module: BridgeModule) -> None:
    """Send the training epoch's logs to the loggers (its ``val_*`` went when the validation ended)."""
    logs = module.finish_train_epoch()
    module.log_dict({k: v for k, v in logs.items() if not k.startswith("val_")}, sync_dist=False)


def log_hyperparameters(module: BridgeModule) -> None:
    """Send the compile arguments (as configs), the batch size and the epochs to the Trainer's loggers, once."""
    trainer = module.trainer
    fit_arguments, module.fit_arguments = module.fit_arguments, None
    if not trainer.loggers:
        return
    if fit_arguments is None:  # a plain Trainer: what its datamodule and max_epochs say
        datamodule = getattr(trainer, "datamodule", None)
        fit_arguments = {"batch_size": getattr(datamodule, "batch_size", None), "epochs": trainer.max_epochs}
    params = {k: v for k, v in module.hparams.items() if k in COMPILE_ARGUMENTS and v is not None}
    params.update({k: v for k, v in fit_arguments.items() if v is not None})
    for logger in trainer.loggers:
        logger.log_hyperparams(params)


def log_batch_logs(module: BridgeModule) -> None:
    """Keras's batch logs (running means) to the loggers as ``batch_<name>``, on the steps Lightning logs.

    Lightning logs every ``log_every_n_steps`` steps; 0, the bridge's default, is never.
    """
    trainer = module.trainer
    if trainer.loggers and logging_due(trainer):
        logs = module.batch_logs(training=True)
        if logs:
            logs = {f"batch_{k}": v for k, v in logs.items()}
            module.log_dict(logs, on_step=True, on_epoch=False, sync_dist=False, batch_size=1)


def ordered_results(module: BridgeModule, logs: Dict[str, float]) -> Any:
    """``evaluate``'s return value from its logs: a scalar, or a list in Keras's order."""
    if module.keras_step is not None:
        return module.keras_step.ordered_results(logs)
    names = ["loss"]
    if module.metric_plan is not None:
        names += module.metric_plan.base_names
    if module.loss_plan is not None:
        names += module.loss_plan.tracker_names
    results = [logs[n] for n in names if n in logs]
    results += [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results
