"""Every access to a private attribute of Keras, Lightning, torch or torchmetrics, in one place.

These libraries do not promise to keep their private names; when one changes, this is the only file
to mend. Each helper says which private name it reads or writes, why the public API does not do, the
versions it was checked on (``Checked:``) and what happens when the name is missing (``Missing:``).

The suite runs on two sets of versions (``.ci/run``): the pinned ones (keras 3.15.1, lightning 2.6.6,
torchmetrics 1.9.0, torch 2.13.0) and the lowest that ``setup.cfg`` declares (keras 3.11.0, lightning
2.2.0, torchmetrics 1.0.0, torch 2.13.0). A name that a required access cannot find raises
:class:`PrivateAPIError`, naming the library, its installed version and the versions checked, rather
than an ``AttributeError`` from deep inside a fit.
"""

from __future__ import annotations

import copy
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

# torch's dispatch-mode base class (the autograd watch of a captured forward is one). Checked: torch 2.3 and 2.13.0.
from torch.utils._python_dispatch import TorchDispatchMode as TorchDispatchMode

from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    import keras
    import lightning.pytorch as pl
    import torch

CHECKED = {"lightning": "2.2.0 and 2.6.6", "keras": "3.11.0 and 3.15.1", "torch": "2.13.0"}


class PrivateAPIError(RuntimeError):
    """A private name the bridge relies on is missing from the installed Keras, Lightning or torch."""


def _installed_version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return "unknown"


def _private(owner: Any, name: str, library: str, purpose: str) -> Any:
    """``getattr(owner, name)``, or :class:`PrivateAPIError` saying what is missing and what to install.

    Example:
        >>> _private(object(), "_no_such_name", "lightning", "an example")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_bridge.utils.compat.PrivateAPIError: keras_bridge needs lightning's private `object._no_such_name` ...
    """
    try:
        return getattr(owner, name)
    except AttributeError:
        raise PrivateAPIError(
            f"keras_bridge needs {library}'s private `{type(owner).__name__}.{name}` ({purpose}), which the "
            f"installed {library} {_installed_version(library)} does not have. keras_bridge was checked with "
            f"{library} {CHECKED[library]}: install one of those versions, or report this with your versions."
        ) from None


def attached_trainer(module: object) -> Optional[Any]:
    """The Trainer a LightningModule is attached to, or None.

    ``LightningModule.trainer`` raises when no Trainer is attached; ``_trainer`` answers None instead.
    Checked: lightning 2.2.0, 2.6.6. Missing: None, as for any module that is not a LightningModule.
    """
    return getattr(module, "_trainer", None)


def dump_checkpoint(trainer: pl.Trainer, weights_only: bool) -> Dict[str, Any]:
    """The checkpoint dict that ``trainer.save_checkpoint`` would write.

    ``save_checkpoint`` is a collective (a barrier), so it hangs when only rank 0 decides to save;
    building the dict is not. Checked: lightning 2.2.0, 2.6.6. Missing: :class:`PrivateAPIError`.
    """
    connector = _private(trainer, "_checkpoint_connector", "lightning", "to build a checkpoint without a barrier")
    return connector.dump_checkpoint(weights_only)


def keras_initial_epoch(model: keras.Model) -> Optional[int]:
    """The epoch a Keras ``BackupAndRestore`` asked the fit to resume at (``model._initial_epoch``), or None.

    Checked: keras 3.11.0, 3.15.1 (Keras's ``Trainer`` sets it to None). Missing: None, as for a torch module
    (no resume asked).
    """
    return getattr(model, "_initial_epoch", None)


def set_keras_initial_epoch(model: keras.Model, epoch: Optional[int]) -> None:
    """Keras's ``model._initial_epoch``, which its ``BackupAndRestore`` sets to resume at ``epoch``.

    Checked: keras 3.11.0, 3.15.1. Missing: it is created (Keras reads it with a default).
    """
    object.__setattr__(model, "_initial_epoch", epoch)


def is_default_keras_hook(method: object) -> bool:
    """True when a callback hook is Keras's own no-op (Keras marks those with ``_is_default``).

    Checked: keras 3.11.0, 3.15.1. Missing: False, so every hook is called (slower, never wrong).
    """
    return bool(getattr(method, "_is_default", False))


def set_start_epoch(trainer: pl.Trainer, epoch: int) -> None:
    """Make Lightning's fit loop start (or resume) at ``epoch``: Keras's ``initial_epoch``.

    Lightning has no public setter; its fit loop counts epochs in ``epoch_progress``.
    Checked: lightning 2.2.0, 2.6.6. Missing: an ``AttributeError`` naming the loop attribute (public names).
    """
    progress: Any = trainer.fit_loop.epoch_progress
    for counter in (progress.current, progress.total):
        counter.ready = counter.started = counter.processed = counter.completed = epoch


def logging_due(trainer: pl.Trainer) -> bool:
    """True when Lightning sends step-level logs to the loggers at this step (``log_every_n_steps``).

    Lightning decides it in its private logger connector (``_logger_connector.should_update_logs``);
    asking avoids computing batch logs that would not be written.
    Checked: lightning 2.2.0, 2.6.6. Missing: :class:`PrivateAPIError`.
    """
    connector = _private(trainer, "_logger_connector", "lightning", "to log batch logs on Lightning's steps")
    return bool(connector.should_update_logs)


def stage_logged_values(trainer: pl.Trainer, on_step: bool) -> Dict[str, Any]:
    """What the running stage's ``self.log`` calls hold now, by name, as Lightning hands them to callbacks.

    ``trainer.callback_metrics`` keeps every value ever logged in the run; the running loop's private
    result collection (``trainer._results``) holds only this stage's: this batch's step values
    (``on_step=True``) or this epoch's aggregates (``on_step=False``).
    Checked: lightning 2.6.6, present in 2.2.0 (None outside a running loop). Missing: :class:`PrivateAPIError`.
    """
    results = _private(trainer, "_results", "lightning", "to read the values the running stage logged")
    if not results:
        return {}
    return dict(results.metrics(on_step)["callback"])


def fit_loop_state(trainer: pl.Trainer, next_epoch: bool = False) -> Dict[str, Any]:
    """Lightning's fit-loop state (epoch and batch progress, global step, training loaders' positions).

    ``trainer.fit_loop.state_dict()`` is public, its layout is not. At an epoch's end (``next_epoch``) the
    state is made that of the start of the next epoch: Lightning restoring the state of that moment
    would replay the end of the epoch (its hooks, hence History). The loaders are told their epoch is over.
    Checked: lightning 2.2.0, 2.6.6. Missing (a changed layout): a ``KeyError`` naming the key.
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


def load_fit_loop_state(trainer: pl.Trainer, state: Dict[str, Any]) -> List[Any]:
    """Restore :func:`fit_loop_state` before the fit loop runs (Lightning then continues where it stood).

    Returns the training loaders' saved positions, left out of the restore: Lightning hands them to
    the loaders only when it restarts inside an epoch, the caller restores them in every case.
    Checked: lightning 2.2.0, 2.6.6. Missing: Lightning's own error on a state it does not know.
    """
    state = copy.deepcopy(state)
    loaders = state.get("state_dict", {}).pop("combined_loader", [])
    trainer.fit_loop.load_state_dict(state)
    return list(loaders)


def loader_states_lightning_skips(checkpoint: Mapping[str, Any]) -> List[Any]:
    """The training loaders' positions in a Lightning checkpoint that Lightning itself will not restore.

    ``trainer.fit(ckpt_path=...)`` hands the saved positions (``state_dict()`` of each training loader,
    kept under the fit loop's state) back to the loaders only when the checkpoint was taken inside an
    epoch. From an epoch's end (what ``ModelCheckpoint`` writes) they are dropped: returned here then,
    and ``[]`` otherwise.
    """
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    progress = (fit_loop.get("epoch_progress") or {}).get("current") or {}
    loaders = list((fit_loop.get("state_dict") or {}).get("combined_loader") or [])
    if not progress or not loaders:
        return []
    unfinished = any(progress.get(k) != progress.get("processed") for k in ("ready", "started"))
    return [] if unfinished else loaders


def on_last_training_batch(trainer: pl.Trainer) -> bool:
    """True during the hooks of an epoch's last training batch (Lightning's ``batch_progress.is_last_batch``).

    Checked: lightning 2.2.0, 2.6.6. Missing: an ``AttributeError`` naming the loop attribute (public names).
    """
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def request_sigterm_stop(trainer: pl.Trainer) -> None:
    """Make ``trainer.received_sigterm`` true: Lightning's loops then stop at the next batch boundary.

    The flag lives on the Trainer's private signal connector; its loops read it after each batch.
    """
    trainer._signal_connector.received_sigterm = True


def keras_backup_save(callback: keras.callbacks.Callback) -> None:
    """Have Keras's own ``BackupAndRestore`` write its backup now (its private ``_save_model``)."""
    callback._save_model()


def get_use_distributed_sampler(trainer: pl.Trainer) -> bool:
    """The Trainer's ``use_distributed_sampler`` flag (kept by its private accelerator connector).

    Checked: lightning 2.2.0, 2.6.6. Missing: :class:`PrivateAPIError`.
    """
    connector = _private(trainer, "_accelerator_connector", "lightning", "to read `use_distributed_sampler`")
    return bool(connector.use_distributed_sampler)


def set_use_distributed_sampler(trainer: pl.Trainer, value: bool) -> None:
    """Set the flag read by :func:`get_use_distributed_sampler` (the data connector reads it at each run).

    Checked: lightning 2.2.0, 2.6.6. Missing: :class:`PrivateAPIError`.
    """
    connector = _private(trainer, "_accelerator_connector", "lightning", "to set `use_distributed_sampler`")
    connector.use_distributed_sampler = value


def reruns_the_script(trainer: pl.Trainer) -> bool:
    """True when the Trainer starts its other processes by running this program again (Lightning's ``ddp``).

    The launcher that does it (``_SubprocessScriptLauncher``) is private to Lightning; it runs
    ``python sys.argv[0] ...`` (or ``python -m <module>``) once per extra process, unless a launcher
    outside (torchrun, SLURM) started them already.
    """
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    if type(launcher).__name__ != "_SubprocessScriptLauncher":
        return False
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return not bool(getattr(environment, "creates_processes_externally", True))


def sends_weights_back(trainer: pl.Trainer) -> bool:
    """True in a process that Lightning's ``ddp_spawn`` / ``ddp_notebook`` / ``ddp_fork`` launcher started.

    That launcher (``_MultiProcessingLauncher``, private to Lightning) runs the fit in processes it starts,
    then sends rank 0's ``state_dict()`` back to the launching process, which loads it.
    Checked: lightning 2.2.0, 2.6.6. Missing: False.
    """
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return type(launcher).__name__ == "_MultiProcessingLauncher"


def main_file() -> Optional[str]:
    """The file the running ``__main__`` came from, or None (``python -c``, standard input, a notebook kernel,
    code ``exec``'d in a ``__main__`` without ``__file__``).
    """
    import __main__

    return getattr(__main__, "__file__", None)


def started_as_module() -> bool:
    """True when this program was started with ``python -m package.module`` (``__main__.__spec__`` is set)."""
    import __main__

    return getattr(__main__, "__spec__", None) is not None


def launched_processes(trainer: pl.Trainer) -> List[Any]:
    """The ``subprocess.Popen`` of every process Lightning's ``ddp`` launcher started from this one.

    Kept on the launcher's ``procs`` (a class private to Lightning); empty for other launchers (the
    ``ddp_spawn`` launcher keeps multiprocessing processes there, whose errors torch reports itself).
    Checked: lightning 2.2.0, 2.6.6. Missing: empty (a failed worker is then reported without its exit code).
    """
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return [proc for proc in getattr(launcher, "procs", None) or [] if hasattr(proc, "poll")]


# ---------------------------------------------------------------------------- Keras internals
_KERAS_MASK = "_keras_mask"  # where Keras keeps a tensor's mask on the torch backend


def get_keras_mask(x: Any) -> Any:
    """The mask Keras attached to tensor ``x`` (``x._keras_mask``), or None.

    Checked: keras 3.11.0, 3.15.1. Missing: None, as for a tensor without a mask.
    """
    return getattr(x, _KERAS_MASK, None)


def keras_registry_names(kind: str) -> List[str]:
    """The names Keras's ``get`` accepts for ``kind`` (``"losses"`` or ``"metrics"``).

    Keras exports no list of them; its ``keras.src.<kind>.ALL_OBJECTS_DICT`` is that list.
    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    module = _private(import_keras().src, kind, "keras", f"to list the names of Keras's {kind}")
    return list(_private(module, "ALL_OBJECTS_DICT", "keras", f"to list the names of Keras's {kind}"))


def is_keras_builtin_loss(fn: Callable[..., Any]) -> bool:
    """True for one of Keras's own loss classes or functions (``keras.src.losses.ALL_OBJECTS``).

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    objects = _private(import_keras().src.losses, "ALL_OBJECTS", "keras", "to recognise Keras's own losses")
    return fn in objects or type(fn) in objects


def has_keras_monitor_op(callback: keras.callbacks.Callback) -> bool:
    """True for a Keras ``MonitorCallback`` (not exported): it resolves ``monitor_op`` in ``_set_monitor_op``.

    Checked: keras 3.11.0, 3.15.1. Missing: False; Keras then resolves ``monitor_op`` itself at the first epoch end.
    """
    return callable(getattr(callback, "_set_monitor_op", None))


def set_keras_monitor_op(callback: keras.callbacks.Callback) -> None:
    """Let Keras resolve ``callback.monitor_op`` from an explicit ``mode`` now, not at the first epoch end.

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError` (only called when :func:`has_keras_monitor_op`).
    """
    _private(callback, "_set_monitor_op", "keras", "to resolve the monitor's mode")()


def init_keras_progbar(logger: Any) -> None:
    """Create the ``Progbar`` of a Keras ``ProgbarLogger`` now (Keras does it lazily, privately).

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    _private(logger, "_maybe_init_progbar", "keras", "to draw Keras's progress bar")()


def progbar_due(bar: Any) -> bool:
    """True when a Keras ``Progbar`` would draw now (its private throttle: one draw per ``interval``).

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    return bool(time.time() - _private(bar, "_last_update", "keras", "to draw as often as Keras") >= bar.interval)


def keras_profile_batches(callback: keras.callbacks.Callback) -> Tuple[int, int]:
    """A Keras ``TensorBoard``'s parsed ``profile_batch`` range (kept only in private attributes).

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    purpose = "to read TensorBoard's `profile_batch`"
    return _private(callback, "_start_batch", "keras", purpose), _private(callback, "_stop_batch", "keras", purpose)


def tensorboard_file_writer(writer: Any) -> Any:
    """The event-file writer behind a ``torch.utils.tensorboard.SummaryWriter`` (to write a raw Summary).

    Checked: torch 2.13.0. Missing: :class:`PrivateAPIError`.
    """
    return _private(writer, "_get_file_writer", "torch", "to write Keras's TensorBoard summaries")()


def keras_output_spec(model: keras.Model, x: Any) -> Any:
    """The output structure of ``model(x, training=False)`` as KerasTensors, without running it for real.

    Keras's own ``fit`` builds an unbuilt model this way (``backend.compute_output_spec`` in a stateless
    scope): no variable changes and no random draw that the model could observe.
    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    keras = import_keras()
    symbolic = keras.tree.map_structure(
        lambda v: None if v is None else keras.KerasTensor(tuple(v.shape), keras.backend.standardize_dtype(v.dtype)), x
    )
    compute_output_spec = _private(keras.src.backend, "compute_output_spec", "keras", "to build a model symbolically")
    return compute_output_spec(model, symbolic, training=False)


def keras_learning_rate_setting(optimizer: Any) -> Any:
    """What a Keras optimizer's learning rate was set to (a schedule, a callable or a variable).

    ``optimizer.learning_rate`` evaluates a schedule; Keras keeps the schedule itself in ``_learning_rate``.
    Checked: keras 3.11.0, 3.15.1. Missing: None (treated as a plain rate; Keras's own setter still refuses
    to set a schedule-driven rate).
    """
    return getattr(optimizer, "_learning_rate", None)


def keras_symbolic_build(model: keras.Model, batch: Any) -> Any:
    """Build a compiled Keras model's loss and metrics from one batch, as Keras's ``fit`` does first.

    Returns the output structure Keras computed on the way (``model(x, training=False)`` as
    KerasTensors), or None when everything was built already and Keras computed none. The caller
    reuses it rather than calling the model once more than Keras does (a ``call`` counting its calls
    would see it).

    Checked: keras 3.11.0, 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    backend = import_keras().src.backend
    original = backend.compute_output_spec
    outputs: List[Any] = []

    def recording(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = original(fn, *args, **kwargs)
        if fn is model and not outputs:
            outputs.append(result)
        return result

    backend.compute_output_spec = recording
    try:
        _private(model, "_symbolic_build", "keras", "to build the compiled loss and metrics")(data_batch=batch)
    finally:
        backend.compute_output_spec = original
    return outputs[0] if outputs else None


def keras_loss_tracker(model: keras.Model) -> Any:
    """The ``Mean`` tracker behind a compiled Keras model's ``loss`` log (``model._loss_tracker``), or None.

    Keras's ``train_step`` feeds it; an overridden ``compute_metrics`` that calls Keras's reports it.
    Checked: keras 3.11.0, 3.15.1 (None until the model is compiled). Missing: :class:`PrivateAPIError`.
    """
    return _private(model, "_loss_tracker", "keras", "to feed the `loss` that Keras's compute_metrics reports")


def keras_flatten_metrics_in_order(model: keras.Model, logs: Dict[str, Any]) -> Any:
    """``evaluate``'s return value from its logs, as Keras orders it (``model._flatten_metrics_in_order``).

    Checked: keras 3.15.1, present in 3.11. Missing: :class:`PrivateAPIError`.
    """
    return _private(model, "_flatten_metrics_in_order", "keras", "to order evaluate's results as Keras")(logs)


def set_keras_callback_model(callback: keras.callbacks.Callback, model: keras.Model) -> None:
    """Keras's ``callback._model``: ``set_model`` would do, but Keras's own needs TensorFlow for some callbacks.

    Checked: keras 3.15.1 (``Callback.model`` reads ``_model``). Missing: not applicable (it is set).
    """
    callback._model = model


def _foreach_ops() -> Any:
    # torch's multi-tensor kernels are private (``torch._foreach_*``) but are what its own optimizers use.
    import types

    import torch

    names = [n for n in dir(torch) if n.startswith("_foreach_")]
    return types.SimpleNamespace(**{n[len("_foreach_") :]: getattr(torch, n) for n in names})


#: ``foreach.mul_(tensors, x)`` is ``torch._foreach_mul_(tensors, x)``: torch's multi-tensor kernels.
#: Checked: torch 2.13.0. Missing: an ``AttributeError`` naming the kernel (``foreach`` has no ``mul_``).
foreach: Any = _foreach_ops()


def pytree_flatten(tree: Any) -> Any:
    """``torch.utils._pytree.tree_flatten``: flattens exactly what ``make_fx`` will see as inputs.

    Checked: torch 2.13.0. Missing: an ``ImportError`` naming ``torch.utils._pytree``.
    """
    from torch.utils._pytree import tree_flatten

    return tree_flatten(tree)


def pytree_children(node: object) -> Optional[List[Any]]:
    """The children of ``node`` one level down as torch's pytree walks it, or None when ``node`` is a leaf.

    ``torch.utils._pytree`` is what ``keras.tree`` walks on the torch backend: lists, tuples, namedtuples,
    ``torch.return_types``, dicts, ``OrderedDict``, ``defaultdict`` and ``deque`` are nodes, ``None`` and
    everything else (a dict subclass too) a leaf; dicts come in insertion order.
    Checked: torch 2.13.0. Missing: an ``ImportError`` naming ``torch.utils._pytree``.
    """
    from torch.utils._pytree import tree_flatten

    children, spec = tree_flatten(node, is_leaf=lambda child: child is not node)
    if spec.num_nodes == 1 and spec.num_leaves == 1:
        return None
    return children


def pytree_map(fn: Callable[[Any], Any], tree: object) -> Any:
    """``torch.utils._pytree.tree_map``: what ``keras.tree.map_structure`` runs on the torch backend.

    Checked: torch 2.13.0. Missing: an ``ImportError`` naming ``torch.utils._pytree``.
    """
    from torch.utils._pytree import tree_map

    return tree_map(fn, tree)


def keras_loss_function_wrapper(fn: Callable[..., Any], name: str) -> Any:
    """``fn`` wrapped the way Keras's ``compile`` wraps a loss function (``LossFunctionWrapper``, not exported).

    Checked: keras 3.15.1. Missing: :class:`PrivateAPIError`.
    """
    wrapper = _private(import_keras().src.losses, "LossFunctionWrapper", "keras", "to wrap a loss as Keras's compile")
    return wrapper(fn, name=name)


def keras_wrapped_function(obj: Any) -> Optional[Tuple[Any, Dict[str, Any]]]:
    """``(fn, kwargs)`` of a Keras ``LossFunctionWrapper`` or ``MeanMetricWrapper``, else None.

    Keras keeps them in ``fn`` / ``_fn_kwargs`` (losses) and ``_fn`` / ``_fn_kwargs`` (metrics).
    Checked: keras 3.15.1. Missing: an ``AttributeError`` naming ``_fn_kwargs`` (to be wrapped in :func:`_private`
    by its owner).
    """
    keras = import_keras()
    if isinstance(obj, keras.src.losses.LossFunctionWrapper):
        return obj.fn, dict(obj._fn_kwargs)
    if isinstance(obj, keras.metrics.MeanMetricWrapper):
        return obj._fn, dict(obj._fn_kwargs)
    return None


def keras_update_rule(optimizer: keras.optimizers.Optimizer) -> Optional[str]:
    """``"rmsprop"``, ``"sgd"`` or ``"adam"`` when ``optimizer`` is exactly Keras's torch-backend class, else None.

    ``keras.optimizers.RMSprop()`` is built as ``keras.src.backend.torch.optimizers.torch_rmsprop.RMSprop``
    (a private module); a user's subclass, which may change the update, is none of them.
    Checked: keras 3.11.0, 3.15.1. Missing: None (Keras's own ``apply`` runs).
    """
    try:
        from keras.src.backend.torch.optimizers import torch_adam, torch_rmsprop, torch_sgd
    except ImportError:
        return None
    kinds = {
        getattr(torch_rmsprop, "RMSprop", None): "rmsprop",
        getattr(torch_sgd, "SGD", None): "sgd",
        getattr(torch_adam, "Adam", None): "adam",
    }
    return kinds.get(type(optimizer))


def keras_optimizer_slots(
    optimizer: keras.optimizers.Optimizer, attribute: str, variables: List[keras.Variable]
) -> Optional[List[Any]]:
    """The torch tensors of a Keras optimizer's slot (``_velocities``, ``momentums``, ...) for ``variables``.

    Keras keeps one slot variable per model variable in a list indexed by ``_get_variable_index``.
    Checked: keras 3.11.0, 3.15.1. Missing: None (Keras's own ``apply`` runs).
    """
    slots = getattr(optimizer, attribute, None)
    index = getattr(optimizer, "_get_variable_index", None)
    if slots is None or index is None:
        return None
    try:
        found = [slots[index(v)] for v in variables]
    except (KeyError, IndexError, TypeError):
        return None
    return None if any(s is None for s in found) else [s.value for s in found]


# Hooks Lightning calls at every training batch that LightningModule and Callback define as no-ops.
_NO_OP_TRAIN_HOOKS = (
    "on_train_batch_start", "on_before_zero_grad", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step",
)  # fmt: skip
# And those of Callback only: Lightning also reads the module's evaluation batch hooks' signatures.
_NO_OP_CALLBACK_HOOKS = (
    "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end", "on_test_batch_start",
    "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


def skip_no_op_batch_hooks(obj: pl.LightningModule | pl.Callback) -> None:
    """Let Lightning skip the per-batch hooks ``obj`` (a LightningModule or a Callback) inherits as no-ops.

    Lightning calls each per-batch hook of the module and of every callback, each under a profiler
    context, whether it does anything or not (six per training step per callback); its dispatchers
    (``_call_lightning_module_hook``, ``_call_callback_hooks``) skip an attribute that is not callable.
    So each such hook that ``type(obj)`` inherits unchanged from ``LightningModule`` / ``Callback`` is set
    to None on the instance; an overridden hook, in the class or a subclass, is left alone. A module's
    evaluation batch hooks stay (Lightning reads their signatures before an evaluation loop).
    Checked: lightning 2.2.0, 2.6.6. Missing: if a later Lightning called the hooks without that check,
    fit would fail at the first batch (``'NoneType' object is not callable``), which the suite shows.
    """
    import lightning.pytorch as lightning

    module = isinstance(obj, lightning.LightningModule)
    base: Any = lightning.LightningModule if module else lightning.Callback
    for name in _NO_OP_TRAIN_HOOKS + (() if module else _NO_OP_CALLBACK_HOOKS):
        if getattr(type(obj), name, None) is getattr(base, name, None):
            setattr(obj, name, None)


class OptimizerStepCounts:
    """Lightning's counts of optimizer steps, for a training step that runs backward and the update itself.

    Lightning counts the steps of automatic optimization in its training loop's
    ``automatic_optimization.optim_progress`` (step ready / completed, zero_grad ready / started / completed)
    and those of manual optimization in ``manual_optimization.optim_step_progress``, which
    ``LightningOptimizer.step`` advances; ``trainer.global_step`` reads the one of the module's current
    mode. A fused step (:mod:`keras_bridge.trainer.fused_step`) steps the torch optimizer itself: :meth:`count`
    advances both, as each mode would, so a checkpoint resumes the same global step in either mode, and
    :meth:`align` gives the manual count the automatic one restored from a checkpoint of automatic optimization.
    Checked: lightning 2.2.0, 2.6.6. Missing: an ``AttributeError`` naming the loop attribute (public names).
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        optimizer = epoch_loop.automatic_optimization.optim_progress.optimizer
        self._step, self._zero_grad = optimizer.step, optimizer.zero_grad
        self._manual = epoch_loop.manual_optimization.optim_step_progress

    def count(self) -> None:
        """One optimizer step with its ``zero_grad``, counted as both kinds of optimization count it."""
        step, zero_grad, manual = self._step, self._zero_grad, self._manual
        step.increment_ready()
        zero_grad.increment_ready()
        zero_grad.increment_started()
        zero_grad.increment_completed()
        step.increment_completed()
        manual.increment_ready()
        manual.increment_completed()

    def align(self) -> None:
        """Give the manual counts the automatic ones (restored from a checkpoint, or reset by Lightning's tuner)."""
        self._manual.load_state_dict(copy.deepcopy(self._step.state_dict()))


def saves_within_epochs(callback: object) -> bool:
    """Whether ``callback`` is a Lightning ``ModelCheckpoint`` that saves at training batches (steps or time).

    Lightning keeps the triggers in private attributes (``_every_n_train_steps``, ``_train_time_interval``),
    and saves at those batches differently under manual optimization.
    Checked: lightning 2.2.0, 2.6.6. Missing: True (the callback is treated as one that does).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    if not isinstance(callback, ModelCheckpoint):
        return False
    steps = getattr(callback, "_every_n_train_steps", None)
    interval = getattr(callback, "_train_time_interval", "missing")
    return steps is None or steps >= 1 or interval is not None


def unwrapped_optimizer_step(optimizer: torch.optim.Optimizer) -> Optional[Callable[[], object]]:
    """``optimizer.step`` as its class wrote it, without the wrapper torch puts around every ``step``, or None.

    torch replaces an optimizer class's ``step`` by a wrapper (marked ``hooked``, the original in
    ``__wrapped__``) that opens a profiler record and runs the step hooks: about as long as a small
    model's whole update. Call the result only while :func:`optimizer_step_hooks_set` is False.
    Checked: torch 2.13.0. Missing: None (the wrapped ``step`` runs).
    """
    step = getattr(type(optimizer), "step", None)
    inner = getattr(step, "__wrapped__", None)
    if inner is None or not getattr(step, "hooked", False):
        return None
    return inner.__get__(optimizer)


def optimizer_step_hooks_set(optimizer: torch.optim.Optimizer) -> bool:
    """Whether step hooks are registered, for all optimizers (``register_optimizer_step_pre_hook``) or this one.

    Checked: torch 2.13.0. Missing: True (the wrapped ``step`` runs them).
    """
    import torch.optim.optimizer as module

    try:
        return bool(
            module._global_optimizer_pre_hooks
            or module._global_optimizer_post_hooks
            or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks
        )
    except AttributeError:
        return True


def gradient_hooks_set(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether a gradient hook is registered on one of ``tensors`` (``register_hook``,
    ``register_post_accumulate_grad_hook``): ``backward`` runs it, a gradient computed elsewhere would not.

    Checked: torch 2.13.0. Missing: True.
    """
    try:
        return any(t._backward_hooks or t._post_accumulate_grad_hooks for t in tensors)
    except AttributeError:
        return True


def caller_code(depth: int) -> Any:
    """The code object of the function ``depth`` frames above the one calling this (CPython's frame access)."""
    return sys._getframe(depth + 1).f_code


def op_is_mutable(op: Callable[..., Any]) -> bool:
    """Whether an aten op writes one of its inputs (its schema says so), as a dispatch mode receives it."""
    schema = getattr(op, "_schema", None)
    return bool(schema is not None and schema.is_mutable)
