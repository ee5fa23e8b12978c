"""Every access to a private attribute of Keras, Lightning or torchmetrics, in one place.

These libraries do not promise to keep their private names; when one changes, this is the only file
to mend. Each helper says which private name it reads or writes and why the public API does not do.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Dict, List, Optional, Tuple

from keras_bridge.utils.keras import import_keras


def attached_trainer(module: Any) -> Optional[Any]:
    """The Trainer a LightningModule is attached to, or None.

    ``LightningModule.trainer`` raises when no Trainer is attached; ``_trainer`` answers None instead.
    """
    return getattr(module, "_trainer", None)


def dump_checkpoint(trainer: Any, weights_only: bool) -> Dict[str, Any]:
    """The checkpoint dict that ``trainer.save_checkpoint`` would write.

    ``save_checkpoint`` is a collective (a barrier), so it hangs when only rank 0 decides to save;
    building the dict is not.
    """
    return trainer._checkpoint_connector.dump_checkpoint(weights_only)


def keras_initial_epoch(model: Any) -> Optional[int]:
    """The epoch a Keras ``BackupAndRestore`` asked the fit to resume at (``model._initial_epoch``), or None."""
    return getattr(model, "_initial_epoch", None)


def set_keras_initial_epoch(model: Any, epoch: Optional[int]) -> None:
    """Keras's ``model._initial_epoch``, which its ``BackupAndRestore`` sets to resume at ``epoch``."""
    object.__setattr__(model, "_initial_epoch", epoch)


def is_default_keras_hook(method: Any) -> bool:
    """True when a callback hook is Keras's own no-op (Keras marks those with ``_is_default``)."""
    return bool(getattr(method, "_is_default", False))


def set_start_epoch(trainer: Any, epoch: int) -> None:
    """Make Lightning's fit loop start (or resume) at ``epoch``: Keras's ``initial_epoch``.

    Lightning has no public setter; its fit loop counts epochs in ``epoch_progress``.
    """
    progress = trainer.fit_loop.epoch_progress
    for counter in (progress.current, progress.total):
        counter.ready = counter.started = counter.processed = counter.completed = epoch


def logging_due(trainer: Any) -> bool:
    """True when Lightning sends step-level logs to the loggers at this step (``log_every_n_steps``).

    Lightning decides it in its private logger connector (``_logger_connector.should_update_logs``);
    asking avoids computing batch logs that would not be written.
    """
    return bool(trainer._logger_connector.should_update_logs)


def stage_logged_values(trainer: Any, on_step: bool) -> Dict[str, Any]:
    """What the running stage's ``self.log`` calls hold now, by name, as Lightning hands them to callbacks.

    ``trainer.callback_metrics`` keeps every value ever logged in the run; the running loop's private
    result collection (``trainer._results``) holds only this stage's: this batch's step values
    (``on_step=True``) or this epoch's aggregates (``on_step=False``).
    """
    results = getattr(trainer, "_results", None)
    if not results:
        return {}
    return dict(results.metrics(on_step)["callback"])


def fit_loop_state(trainer: Any, next_epoch: bool = False) -> Dict[str, Any]:
    """Lightning's fit-loop state (epoch and batch progress, global step, training loaders' positions).

    ``trainer.fit_loop.state_dict()`` is public, its layout is not. At an epoch's end (``next_epoch``) the
    state is made that of the start of the next epoch: Lightning restoring the state of that moment
    would replay the end of the epoch (its hooks, hence History). The loaders are told their epoch is over.
    """
    state = copy.deepcopy(trainer.fit_loop.state_dict())
    if not next_epoch:
        return state
    epochs = state["epoch_progress"]
    for part in ("total", "current"):
        done = epochs[part]["processed"]
        epochs[part].update(ready=done, started=done, processed=done, completed=done)
    batches = state["epoch_loop.batch_progress"]
    batches["current"] = {key: 0 for key in batches["current"]}
    batches["total"] = {key: batches["total"]["processed"] for key in batches["total"]}
    batches["is_last_batch"] = False
    for loader_state in state.get("state_dict", {}).get("combined_loader", []):
        loader_state["epoch_finished"] = True
    return state


def load_fit_loop_state(trainer: Any, state: Dict[str, Any]) -> List[Any]:
    """Restore :func:`fit_loop_state` before the fit loop runs (Lightning then continues where it stood).

    Returns the training loaders' saved positions, left out of the restore: Lightning hands them to
    the loaders only when it restarts inside an epoch, the caller restores them in every case.
    """
    state = copy.deepcopy(state)
    loaders = state.get("state_dict", {}).pop("combined_loader", [])
    trainer.fit_loop.load_state_dict(state)
    return list(loaders)


def on_last_training_batch(trainer: Any) -> bool:
    """True during the hooks of an epoch's last training batch (Lightning's ``batch_progress.is_last_batch``)."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def get_use_distributed_sampler(trainer: Any) -> bool:
    """The Trainer's ``use_distributed_sampler`` flag (kept by its private accelerator connector)."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)


def set_use_distributed_sampler(trainer: Any, value: bool) -> None:
    """Set the flag read by :func:`get_use_distributed_sampler` (the data connector reads it at each run)."""
    trainer._accelerator_connector.use_distributed_sampler = value


def launched_processes(trainer: Any) -> List[Any]:
    """The ``subprocess.Popen`` of every process Lightning's ``ddp`` launcher started from this one.

    Kept on the launcher's ``procs`` (a class private to Lightning); empty for other launchers.
    """
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return list(getattr(launcher, "procs", None) or [])


# ---------------------------------------------------------------------------- Keras internals
_KERAS_MASK = "_keras_mask"  # where Keras keeps a tensor's mask on the torch backend


def get_keras_mask(x: Any) -> Any:
    """The mask Keras attached to tensor ``x`` (``x._keras_mask``), or None."""
    return getattr(x, _KERAS_MASK, None)


def keras_registry_names(kind: str) -> List[str]:
    """The names Keras's ``get`` accepts for ``kind`` (``"losses"`` or ``"metrics"``).

    Keras exports no list of them; its ``keras.src.<kind>.ALL_OBJECTS_DICT`` is that list.
    """
    return list(getattr(import_keras().src, kind).ALL_OBJECTS_DICT)


def is_keras_builtin_loss(fn: Any) -> bool:
    """True for one of Keras's own loss classes or functions (``keras.src.losses.ALL_OBJECTS``)."""
    objects = import_keras().src.losses.ALL_OBJECTS
    return fn in objects or type(fn) in objects


def has_keras_monitor_op(callback: Any) -> bool:
    """True for a Keras ``MonitorCallback`` (not exported): it resolves ``monitor_op`` in ``_set_monitor_op``."""
    return callable(getattr(callback, "_set_monitor_op", None))


def set_keras_monitor_op(callback: Any) -> None:
    """Let Keras resolve ``callback.monitor_op`` from an explicit ``mode`` now, not at the first epoch end."""
    callback._set_monitor_op()


def init_keras_progbar(logger: Any) -> None:
    """Create the ``Progbar`` of a Keras ``ProgbarLogger`` now (Keras does it lazily, privately)."""
    logger._maybe_init_progbar()


def progbar_due(bar: Any) -> bool:
    """True when a Keras ``Progbar`` would draw now (its private throttle: one draw per ``interval``)."""
    return bool(time.time() - bar._last_update >= bar.interval)


def keras_profile_batches(callback: Any) -> Tuple[int, int]:
    """A Keras ``TensorBoard``'s parsed ``profile_batch`` range (kept only in private attributes)."""
    return callback._start_batch, callback._stop_batch


def tensorboard_file_writer(writer: Any) -> Any:
    """The event-file writer behind a ``torch.utils.tensorboard.SummaryWriter`` (to write a raw Summary)."""
    return writer._get_file_writer()


def keras_output_spec(model: Any, x: Any) -> Any:
    """The output structure of ``model(x, training=False)`` as KerasTensors, without running it for real.

    Keras's own ``fit`` builds an unbuilt model this way (``backend.compute_output_spec`` in a stateless
    scope): no variable changes and no random draw that the model could observe.
    """
    keras = import_keras()
    symbolic = keras.tree.map_structure(
        lambda v: None if v is None else keras.KerasTensor(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)), x
    )
    return keras.src.backend.compute_output_spec(model, symbolic, training=False)


def keras_learning_rate_setting(optimizer: Any) -> Any:
    """What a Keras optimizer's learning rate was set to (a schedule, a callable or a variable).

    ``optimizer.learning_rate`` evaluates a schedule; Keras keeps the schedule itself in ``_learning_rate``.
    """
    return getattr(optimizer, "_learning_rate", None)


def keras_symbolic_build(model: Any, batch: Any) -> None:
    """Build a compiled Keras model's loss and metrics from one batch, as Keras's ``fit`` does first."""
    model._symbolic_build(data_batch=batch)


def keras_loss_tracker(model: Any) -> Any:
    """The ``Mean`` tracker behind a compiled Keras model's ``loss`` log (``model._loss_tracker``), or None.

    Keras's ``train_step`` feeds it; an overridden ``compute_metrics`` that calls Keras's reports it.
    """
    return getattr(model, "_loss_tracker", None)


def keras_flatten_metrics_in_order(model: Any, logs: Dict[str, Any]) -> Any:
    """``evaluate``'s return value from its logs, as Keras orders it (``model._flatten_metrics_in_order``)."""
    return model._flatten_metrics_in_order(logs)


def set_keras_callback_model(callback: Any, model: Any) -> None:
    """Keras's ``callback._model``: ``set_model`` would do, but Keras's own needs TensorFlow for some callbacks."""
    callback._model = model


def _foreach_ops() -> Any:
    # torch's multi-tensor kernels are private (``torch._foreach_*``) but are what its own optimizers use.
    import types

    import torch

    names = [n for n in dir(torch) if n.startswith("_foreach_")]
    return types.SimpleNamespace(**{n[len("_foreach_") :]: getattr(torch, n) for n in names})


#: ``foreach.mul_(tensors, x)`` is ``torch._foreach_mul_(tensors, x)``: torch's multi-tensor kernels.
foreach: Any = _foreach_ops()


def pytree_flatten(tree: Any) -> Any:
    """``torch.utils._pytree.tree_flatten``: flattens exactly what ``make_fx`` will see as inputs."""
    from torch.utils._pytree import tree_flatten

    return tree_flatten(tree)


def keras_loss_function_wrapper(fn: Any, name: str) -> Any:
    """``fn`` wrapped the way Keras's ``compile`` wraps a loss function (``LossFunctionWrapper``, not exported)."""
    return import_keras().src.losses.LossFunctionWrapper(fn, name=name)


def keras_wrapped_function(obj: Any) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """``(fn, kwargs)`` of a Keras ``LossFunctionWrapper`` or ``MeanMetricWrapper``, else None.

    Keras keeps them in ``fn`` / ``_fn_kwargs`` (losses) and ``_fn`` / ``_fn_kwargs`` (metrics).
    """
    keras = import_keras()
    if isinstance(obj, keras.src.losses.LossFunctionWrapper):
        return obj.fn, dict(obj._fn_kwargs)
    if isinstance(obj, keras.metrics.MeanMetricWrapper):
        return obj._fn, dict(obj._fn_kwargs)
    return None
