"""``fit`` / ``evaluate`` / ``predict``: Keras arguments in, a ``lightning.Trainer`` run, Keras results out."""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import lightning.pytorch as pl
import torch

from keras_bridge._keras import import_keras
from keras_bridge.callbacks.adapter import KerasCallbackAdapter
from keras_bridge.callbacks.model_ref import callback_model
from keras_bridge.callbacks.progbar import make_progbar_logger
from keras_bridge.compile.structure import (
    flatten_outputs,
    map_structure,
    output_structure,
    pack_outputs,
    resolve_output_names,
    unpack_batch,
)
from keras_bridge.data import adapter as data_adapter

_VERBOSE = (0, 1, 2, "auto")
# Trainer options that a Keras argument decides.
_OWNED_OPTIONS = {"max_epochs": "epochs", "check_val_every_n_epoch": "validation_freq",
                  "limit_val_batches": "steps", "limit_predict_batches": "steps"}
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


# ---------------------------------------------------------------------------- quiet Lightning
@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's banners, tips and Lightning-user warnings (set KERAS_BRIDGE_LIGHTNING_LOGS=1 to see them)."""
    if os.environ.get("KERAS_BRIDGE_LIGHTNING_LOGS"):
        yield
        return
    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        for pattern in (
            ".*does not have many workers.*",
            ".*sync_dist=True.*",
            ".*GPU available but not used.*",
            ".*is smaller than the logging interval.*",
            ".*Total length of .* across ranks is zero.*",
            ".*You defined a `validation_step` but have no `val_dataloader`.*",
            ".*Consider setting `persistent_workers=True`.*",
            ".*`training_step` returned `None`.*",
            ".*Your `IterableDataset` has `__len__` defined.*",
            ".*isinstance\\(treespec, LeafSpec\\).*",
        ):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


# ---------------------------------------------------------------------------- argument checks
def _check_verbose(verbose: Any) -> int:
    if verbose not in _VERBOSE or isinstance(verbose, bool):
        raise ValueError(f"Expected `verbose` to be 0, 1, 2 or 'auto'. Received: verbose={verbose!r}")
    return 1 if verbose == "auto" else int(verbose)


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}")


def _check_fit_args(epochs: int, initial_epoch: int, validation_split: Any, steps_per_epoch: Any,
                    validation_freq: Any, shuffle: Any) -> None:
    _check_int("epochs", epochs, 0)
    _check_int("initial_epoch", initial_epoch, 0)
    _check_int("steps_per_epoch", steps_per_epoch, 1, allow_none=True)
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
        raise ValueError(
            "Expected `validation_split` to be a float in [0, 1). Received: "
            f"validation_split={validation_split!r}"
        )
    if isinstance(validation_freq, (list, tuple, set)):
        for v in validation_freq:
            _check_int("validation_freq", v, 1)
    else:
        _check_int("validation_freq", validation_freq, 1)
    if shuffle not in (True, False, "batch"):
        raise ValueError(f"Expected `shuffle` to be True, False or 'batch'. Received: shuffle={shuffle!r}")


def _require_compiled(module: Any) -> None:
    if not module.compiled:
        raise ValueError(
            "You must call `compile()` before using the model: call "
            "module.compile(optimizer=..., loss=..., metrics=...) before fit() or evaluate()."
        )


def _check_input_names(module: Any, x: Any) -> None:
    if not isinstance(x, dict):
        return
    expected = module.input_names or (None if module.is_keras else module._forward_kwargs)
    if not expected:
        return
    missing = [n for n in expected if n not in x]
    if module.is_keras or module.input_names:
        unknown = [k for k in x if k not in expected]
    else:
        unknown = [k for k in x if k not in expected]
        # torch forward parameters with defaults may be omitted
        import inspect

        params = inspect.signature(module.model.forward).parameters
        missing = [n for n in missing if params[n].default is inspect.Parameter.empty]
    if missing or unknown:
        raise ValueError(
            f"The dict `x` does not match the model's inputs {list(expected)}: missing "
            f"{missing}, unexpected {unknown}. Received: x keys={list(x.keys())}"
        )


def _check_callbacks(callbacks: Any) -> Tuple[List[Any], List[Any]]:
    """Split ``callbacks`` into Keras callbacks and Lightning callbacks."""
    if callbacks is None:
        return [], []
    if not isinstance(callbacks, (list, tuple)):
        callbacks = [callbacks]
    keras = import_keras()
    keras_cbs, lightning_cbs = [], []
    for cb in callbacks:
        if isinstance(cb, dict):
            from keras_bridge.callbacks.convert import from_config

            cb = from_config(cb)
        if isinstance(cb, keras.callbacks.Callback):
            keras_cbs.append(cb)
        elif isinstance(cb, pl.Callback):
            lightning_cbs.append(cb)
        else:
            raise TypeError(
                "Expected each entry of `callbacks` to be a keras.callbacks.Callback, a Keras "
                "callback config dict ({'class_name': ..., 'config': {...}}) or a lightning Callback. Received: {cb!r} of type {type(cb).__name__}"
            )
    return keras_cbs, lightning_cbs


# ---------------------------------------------------------------------------- build + trainer
def _build(module: Any, loader: Any) -> None:
    if module.built:
        return
    batch = data_adapter.first_batch(loader)
    x, y, _ = unpack_batch(batch)
    _check_input_names(module, x)
    device = next((p.device for p in module.model.parameters()), torch.device("cpu"))
    from lightning.pytorch.utilities import move_data_to_device

    x_dev = move_data_to_device(x, device)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        y_pred = module(x_dev, training=False)
    module.train(was_training)
    module.build_from_batch(x, move_data_to_device(y, device) if y is not None else None, y_pred)


def _make_trainer(trainer: Any, extra_callbacks: Sequence[pl.Callback], **defaults: Any) -> Tuple[pl.Trainer, List[pl.Callback]]:
    """Return a Trainer with ``extra_callbacks`` attached, and the callbacks to detach afterwards."""
    if isinstance(trainer, pl.Trainer):
        trainer.callbacks.extend(extra_callbacks)
        if "max_epochs" in defaults:
            trainer.fit_loop.max_epochs = defaults["max_epochs"]
        return trainer, list(extra_callbacks)
    if trainer is not None and not isinstance(trainer, dict):
        raise TypeError(
            "Expected `trainer` to be a dict of lightning.Trainer options or a lightning.Trainer. "
            f"Received: trainer of type {type(trainer).__name__}"
        )
    options: Dict[str, Any] = dict(
        accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
    options.update(defaults)
    user = dict(trainer or {})
    for key, keras_arg in _OWNED_OPTIONS.items():
        if key in user and key in defaults and user[key] != defaults[key]:
            raise ValueError(
                f"The `trainer` option {key}={user[key]!r} conflicts with the Keras argument "
                f"`{keras_arg}` (which sets {key}={defaults[key]!r}). Set `{keras_arg}` instead."
            )
    user_cbs = user.pop("callbacks", None) or []
    if not isinstance(user_cbs, (list, tuple)):
        user_cbs = [user_cbs]
    options.update(user)
    options["callbacks"] = list(user_cbs) + list(extra_callbacks)
    with quiet_lightning():
        return pl.Trainer(**options), []


def _set_initial_epoch(trainer: pl.Trainer, initial_epoch: int) -> None:
    progress = trainer.fit_loop.epoch_progress
    for counter in (progress.current, progress.total):
        counter.ready = counter.started = counter.processed = counter.completed = initial_epoch


def _params(verbose: int, epochs: int, steps: Optional[int]) -> Dict[str, Any]:
    return {"verbose": verbose, "epochs": epochs, "steps": steps}


def _progbar(verbose: int, trainer: pl.Trainer) -> Any:
    if verbose == 0 or not trainer.is_global_zero:
        return None
    return make_progbar_logger()


def _detach(trainer: pl.Trainer, callbacks: Sequence[pl.Callback]) -> None:
    for cb in callbacks:
        if cb in trainer.callbacks:
            trainer.callbacks.remove(cb)


def _seed(module: Any) -> int:
    """The shuffle seed of this fit: reproducible under ``keras.utils.set_random_seed``/``seed_everything``.

    Derived from torch's initial seed and a per-module fit counter rather than drawn from the global
    RNG, so calling fit does not shift the random stream that the model's own layers draw from.
    """
    count = getattr(module, "_fit_count", 0)
    object.__setattr__(module, "_fit_count", count + 1)
    return (torch.initial_seed() + 7919 * count) % (2**31 - 1)


# ---------------------------------------------------------------------------- public entry points
def fit(module: Any, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
        verbose: Any = "auto", callbacks: Any = None, validation_split: float = 0.0,
        validation_data: Any = None, shuffle: Any = True, class_weight: Any = None,
        sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: Optional[int] = None,
        validation_freq: Any = 1, trainer: Any = None) -> Any:
    """Keras ``Model.fit`` on a ``lightning.Trainer``; returns a ``keras.callbacks.History``."""
    _require_compiled(module)
    verbose = _check_verbose(verbose)
    _check_fit_args(epochs, initial_epoch, validation_split, steps_per_epoch, validation_freq, shuffle)
    keras_cbs, lightning_cbs = _check_callbacks(callbacks)
    if x is None:
        raise ValueError("`fit()` needs training data: pass `x` (arrays or a dataset).")
    train_loader, val_loader = data_adapter.fit_loaders(
        x, y, sample_weight, batch_size, shuffle, class_weight, validation_split, validation_data,
        steps_per_epoch, _seed(module),
    )
    _build(module, train_loader)
    steps = data_adapter.loader_length(train_loader)
    if steps_per_epoch is not None:
        steps = steps_per_epoch if steps is None else min(steps, steps_per_epoch)
    history = next((cb for cb in keras_cbs if isinstance(cb, import_keras().callbacks.History)), None)
    if history is None:
        history = import_keras().callbacks.History()
    else:
        keras_cbs = [cb for cb in keras_cbs if cb is not history]
    check_val = 1 if isinstance(validation_freq, (list, tuple, set)) else validation_freq
    defaults: Dict[str, Any] = dict(max_epochs=epochs, check_val_every_n_epoch=check_val)
    if steps_per_epoch is not None and not data_adapter.limits_own_steps(train_loader):
        defaults["limit_train_batches"] = steps_per_epoch
    run_trainer, attached = _make_trainer(trainer, lightning_cbs, **defaults)
    adapter = KerasCallbackAdapter(
        keras_cbs, history, _progbar(verbose, run_trainer), _params(verbose, epochs, steps),
        callback_model(module), mode="fit", validation_freq=validation_freq,
    )
    run_trainer.callbacks.insert(0, adapter)
    attached.append(adapter)
    _set_initial_epoch(run_trainer, initial_epoch)
    module.history = history
    try:
        with quiet_lightning():
            run_trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    finally:
        _detach(run_trainer, attached)
    return history


def _ordered_results(module: Any, logs: Dict[str, float]) -> Any:
    names = ["loss"]
    if module.metric_plan is not None:
        names += module.metric_plan.base_names
    if module.loss_plan is not None:
        names += module.loss_plan.tracker_names
    results = [logs[n] for n in names if n in logs]
    results += [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results


def evaluate(module: Any, x: Any = None, y: Any = None, batch_size: Optional[int] = None,
             verbose: Any = "auto", sample_weight: Any = None, steps: Optional[int] = None,
             return_dict: bool = False, callbacks: Any = None, trainer: Any = None) -> Any:
    """Keras ``Model.evaluate``: a scalar, a list in Keras's order, or (``return_dict``) a dict."""
    _require_compiled(module)
    verbose = _check_verbose(verbose)
    _check_int("steps", steps, 1, allow_none=True)
    keras_cbs, lightning_cbs = _check_callbacks(callbacks)
    loader = data_adapter.eval_loader(x, y, sample_weight, batch_size, steps)
    _build(module, loader)
    n_steps = data_adapter.loader_length(loader)
    defaults: Dict[str, Any] = {}
    if steps is not None:
        defaults["limit_val_batches"] = steps
    run_trainer, attached = _make_trainer(trainer, lightning_cbs, **defaults)
    adapter = KerasCallbackAdapter(
        keras_cbs, None, _progbar(verbose, run_trainer), _params(verbose, 1, n_steps),
        callback_model(module), mode="evaluate",
    )
    run_trainer.callbacks.insert(0, adapter)
    attached.append(adapter)
    try:
        with quiet_lightning():
            run_trainer.validate(module, dataloaders=loader, verbose=False)
    finally:
        _detach(run_trainer, attached)
    logs = dict(module.finish_eval_epoch())
    return logs if return_dict else _ordered_results(module, logs)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def _gather_predictions(loader: Any, outputs: Any) -> Any:
    """Under DDP, every process's per-batch predictions, in input order, on every process (a collective)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return outputs
    local = [map_structure(lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t, o)
             for o in outputs or []]
    per_rank: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, local)
    return data_adapter.unshard_results(loader, per_rank)


def predict(module: Any, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto",
            steps: Optional[int] = None, callbacks: Any = None, trainer: Any = None) -> Any:
    """Keras ``Model.predict``: NumPy arrays in the model's output structure (single, list or dict)."""
    verbose = _check_verbose(verbose)
    _check_int("steps", steps, 1, allow_none=True)
    keras_cbs, lightning_cbs = _check_callbacks(callbacks)
    loader = data_adapter.predict_loader(x, batch_size, steps)
    first = data_adapter.first_batch(loader)
    _check_input_names(module, unpack_batch(first)[0])
    defaults: Dict[str, Any] = {}
    if steps is not None:
        defaults["limit_predict_batches"] = steps
    run_trainer, attached = _make_trainer(trainer, lightning_cbs, **defaults)
    adapter = KerasCallbackAdapter(
        keras_cbs, None, _progbar(verbose, run_trainer), _params(verbose, 1, data_adapter.loader_length(loader)),
        callback_model(module), mode="predict",
    )
    run_trainer.callbacks.insert(0, adapter)
    attached.append(adapter)
    try:
        with quiet_lightning():
            outputs = run_trainer.predict(module, dataloaders=loader, return_predictions=True)
    finally:
        _detach(run_trainer, attached)
    outputs = _gather_predictions(loader, outputs)
    if not outputs:
        return None
    kind = output_structure(outputs[0])
    names = resolve_output_names(outputs[0], module.declared_output_names)
    columns = list(zip(*(flatten_outputs(o, names) for o in outputs)))
    arrays = [np.concatenate([_to_numpy(t) for t in col], axis=0) for col in columns]
    return pack_outputs(arrays, names, kind)
