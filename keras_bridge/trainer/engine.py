"""``fit`` / ``evaluate`` / ``predict``: Keras arguments in, one ``lightning.Trainer`` run, Keras results out.

Each entry point checks its arguments, builds its loader (:mod:`keras_bridge.data.dispatch`), builds the
module from the first batch if needed, and runs one Trainer stage through :func:`_run`: the
:class:`~keras_bridge.trainer.connector.TrainerConnector` makes or borrows the Trainer, the Keras
callbacks ride on one :class:`~keras_bridge.callbacks.driver.KerasCallbackDriver`.
"""

from __future__ import annotations

import functools
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    ParamSpec,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device

import keras_bridge.data.dispatch as data_dispatch
import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.callbacks.driver import KerasCallbackDriver
from keras_bridge.callbacks.history import new_history
from keras_bridge.callbacks.progbar import make_progbar_logger
from keras_bridge.compile.structure import flatten_outputs, output_structure, pack_outputs, resolve_output_names
from keras_bridge.compile.tracking import KerasHooks
from keras_bridge.data.contract import DataOptions, Loader
from keras_bridge.trainer.arguments import check_fit_args, check_input_names, check_int, check_verbose, split_callbacks
from keras_bridge.trainer.connector import TrainerArgument, TrainerConnector, quiet_lightning
from keras_bridge.typing import ArrayTree, DataInput
from keras_bridge.utils.compat import keras_output_spec, keras_symbolic_build, set_start_epoch
from keras_bridge.utils.errors import LabelRangeError, user_traceback
from keras_bridge.utils.keras import is_keras_object
from keras_bridge.utils.tree import map_structure, unpack_x_y_sample_weight

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule


def _lightning(module: BridgeModule) -> pl.LightningModule:
    """The module as Lightning's Trainer takes it (a ``KerasModule`` is a ``LightningModule``)."""
    assert isinstance(module, pl.LightningModule)
    return module


def _build(module: BridgeModule, loader: Loader, stage: str = "train", keras_draws: bool = True) -> None:
    """Build the module's losses and metrics from the first batch, as Keras builds an unbuilt model.

    A Keras model is built symbolically, as Keras's ``fit`` does (nothing it can observe runs, and
    its own compiled loss and metrics are built too); a torch module runs one forward pass without
    gradients.
    """
    if module.built:
        return
    batch = loader.peek()
    if keras_draws:
        loader.take_peek_draws()  # Keras peeks its first batch through a fresh DataLoader iterator
    x, y, sw = unpack_x_y_sample_weight(batch)
    check_input_names(module, x)
    require_targets(module, y, "the first batch of `x` holds no targets")
    if module.is_keras:
        if module.keras_step is not None:  # Keras's own build, then its own steps
            module.keras_step.build(batch, stage)
            module.build_from_batch(x, y, None)
            return
        spec = None
        if getattr(module.model, "compiled", False):
            try:
                spec = keras_symbolic_build(module.model, (x, y, sw))
            except (ValueError, KeyError) as err:  # arguments the bridge takes but Keras's own compile refuses
                module.keep_keras_optimizer_only(err)
        # The model's calls are Keras's: Keras's own build computed the outputs, or one symbolic call does.
        y_pred = map_structure(_zeros_like_spec, spec if spec is not None else keras_output_spec(module.model, x))
        module.build_from_batch(x, y, y_pred)
        return
    device = next((p.device for p in module.model.parameters()), torch.device("cpu"))
    was_training = module.training
    module.eval()
    with torch.no_grad():
        y_pred = module(move_data_to_device(x, device), training=False)
    module.train(was_training)
    module.build_from_batch(x, move_data_to_device(y, device) if y is not None else None, y_pred)


def _prepare_keras_steps(
    module: BridgeModule, mode: str, callbacks: Iterable[object] = (), **loaders: Optional[Loader]
) -> None:
    # Keras makes its step functions before running them; its refusals come out before training starts.
    if module.keras_step is not None:
        module.keras_step.check_callbacks(callbacks)
        packed = {stage: loader is not None and loader.mirrors_keras_rng for stage, loader in loaders.items()}
        module.keras_step.prepare(mode, packed)


def next_shuffle_seed(module: BridgeModule) -> Optional[int]:
    """The shuffle seed of the next fit (``KerasModule.next_shuffle_seed``): None (Keras's shuffle, drawn from
    the global generators as Keras draws it) unless ``kb.data.set_shuffle_order("seeded")`` chose the
    independent shuffle.

    The independent shuffle's seed is reproducible under ``keras.utils.set_random_seed`` /
    ``seed_everything``: derived from torch's initial seed and the module's fit count rather than drawn
    from the global RNG, so calling fit does not shift the random stream of the model's layers.
    """
    module.fit_count += 1
    if keras_rng.keras_stream():
        return None
    return (torch.initial_seed() + 7919 * (module.fit_count - 1)) % (2**31 - 1)


def require_targets(module: BridgeModule, y: ArrayTree, where: str) -> None:
    """Refuse, before training, data without targets for a compiled loss that needs them.

    Keras itself fails inside its loss with an ``AttributeError`` on ``None``. A model that computes its
    own loss (a Keras model overriding ``compute_loss``, or one compiled with ``loss=None`` and
    ``add_loss``) trains without ``y``.
    """
    loss = module.loss_plan.arguments["loss"] if module.loss_plan is not None else None
    if y is not None or loss is None:
        return
    if module.is_keras and KerasHooks.detect(module.model, keras_logs=False) is not None:
        return
    raise ValueError(
        f"Expected targets `y` for the compiled loss {loss!r}: fit trains the model to match them. Received: "
        f"y=None ({where}). Pass `y` (arrays), or a dataset whose batches are `(x, y)` or "
        "`(x, y, sample_weight)`; a model trained on its own losses only (`add_loss`) is compiled with loss=None."
    )


def _zeros_like_spec(spec: Any) -> Any:
    return torch.zeros(tuple(spec.shape), dtype=getattr(torch, str(spec.dtype)))


Callbacks = Tuple[List[Any], List[Any]]  # (Keras callbacks, Lightning callbacks)
P = ParamSpec("P")
R = TypeVar("R")


def _run(module: BridgeModule, trainer: TrainerArgument, cbs: Callbacks, owned: Dict[str, Any],
         driver_args: Dict[str, Any], stage: Callable[[pl.Trainer], Any]) -> Any:  # fmt: skip
    """One Trainer stage with the Keras callbacks attached: the skeleton every entry point shares.

    ``driver_args`` go to the :class:`KerasCallbackDriver`, but ``initial_epoch`` to the fit loop.
    """
    keras_cbs, lightning_cbs = cbs
    initial_epoch = driver_args.pop("initial_epoch", None)
    # The bar is drawn by global rank 0 only: the driver drops it on the other processes at setup.
    progbar = make_progbar_logger() if driver_args["params"]["verbose"] else None
    driver = KerasCallbackDriver(keras_cbs, progbar=progbar, model=module.callback_model, **driver_args)
    try:
        with TrainerConnector(trainer, [driver, *lightning_cbs], owned) as run_trainer:
            if initial_epoch is not None:
                set_start_epoch(run_trainer, initial_epoch)
            with quiet_lightning():
                return stage(run_trainer)
    except LabelRangeError as err:
        # About the user's data, not about the code the error went through: no inner frames.
        raise err.in_batch(driver.describe_position()).with_traceback(None) from None


def _surface_user_errors(entry_point: Callable[P, R]) -> Callable[P, R]:
    """An entry point whose errors raised in the user's code (a loss, a metric, a callback, a dataset) reach
    the caller as they are, with the user's frames directly under the call: Lightning's and the bridge's
    frames in between are cut, as Keras's traceback filtering does (see :func:`user_traceback`).
    """

    @functools.wraps(entry_point)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return entry_point(*args, **kwargs)
        except Exception as err:
            tb = user_traceback(err.__traceback__)
            if tb is err.__traceback__:
                raise
            raise err.with_traceback(tb)  # noqa: B904  (the same exception, re-raised)

    return call


@_surface_user_errors
def fit(module: BridgeModule, x: DataInput = None, y: ArrayTree = None, batch_size: Optional[int] = None,
        epochs: int = 1, verbose: Union[int, str] = "auto", callbacks: object = None, validation_split: float = 0.0,
        validation_data: DataInput = None, shuffle: Union[bool, str] = True,
        class_weight: Optional[Mapping[int, float]] = None, sample_weight: ArrayTree = None, initial_epoch: int = 0,
        steps_per_epoch: Optional[int] = None, validation_steps: Optional[int] = None,
        validation_batch_size: Optional[int] = None, validation_freq: Union[int, Sequence[int]] = 1,
        trainer: TrainerArgument = None) -> Any:  # fmt: skip
    """Keras ``Model.fit`` on a ``lightning.Trainer``; returns a ``keras.callbacks.History``.

    ``validation_steps`` limits every validation to its first batches, ``validation_batch_size`` batches
    the validation arrays (default: ``batch_size``), as in Keras.
    """
    module.require_compiled()
    verbose = check_verbose(verbose)
    check_fit_args(epochs, initial_epoch, validation_split, steps_per_epoch, validation_freq, shuffle)
    check_int("validation_steps", validation_steps, 1, allow_none=True)
    check_int("validation_batch_size", validation_batch_size, 1, allow_none=True)
    keras_cbs, lightning_cbs = split_callbacks(callbacks)
    if x is None:
        raise ValueError("`fit()` needs training data: pass `x` (arrays or a dataset).")
    # The trainer owns the validation arguments, as Keras's does; the data layer serves each part.
    train, validation = data_dispatch.split_validation(x, y, sample_weight, validation_split, validation_data)
    seed = module.next_shuffle_seed()  # None: Keras's shuffle
    options = DataOptions(batch_size=batch_size, shuffle=shuffle, class_weight=class_weight, steps=steps_per_epoch,
                          seed=seed)  # fmt: skip
    train_loader = data_dispatch.make_loader(*train, options=options)
    val_loader = None
    if validation is not None:
        val_options = DataOptions(batch_size=validation_batch_size or batch_size, batching_steps=validation_steps,
                                  mode="evaluate")  # fmt: skip
        val_loader = data_dispatch.validation_loader(validation, val_options, from_split=validation_data is None)
    draws = _keras_rng(module, seed)
    _prepare_keras_steps(module, "fit", [*keras_cbs, *lightning_cbs], train=train_loader, eval=val_loader)
    if y is None and module.built and train_loader.mirrors_keras_rng:  # arrays
        require_targets(module, y, "`x` is arrays and no `y` was passed")
    _build(module, train_loader, keras_draws=draws)
    steps = data_dispatch.loader_length(train_loader)
    if steps_per_epoch is not None:
        steps = steps_per_epoch if steps is None else min(steps, steps_per_epoch)
    history = next((cb for cb in keras_cbs if is_keras_object(cb, "callbacks.History")), None) or new_history()
    keras_cbs = [cb for cb in keras_cbs if cb is not history]
    check_val = 1 if isinstance(validation_freq, (list, tuple, set)) else validation_freq
    # Every loader applies steps_per_epoch itself (carrying its iterator over epochs, as Keras does).
    owned: Dict[str, Any] = {"max_epochs": epochs, "check_val_every_n_epoch": check_val}
    if validation_steps is not None and val_loader is not None:
        owned["limit_val_batches"] = validation_steps
    module.history = history
    # Logged with the compile arguments when the Trainer has loggers (KerasModule.on_fit_start).
    module.fit_arguments = dict(batch_size=train_loader.global_batch_size or batch_size,
                                epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                                validation_split=validation_split, shuffle=shuffle)  # fmt: skip
    rng_points = (
        _pass_draws(draws, train_loader, steps_per_epoch),
        _pass_draws(draws, val_loader, validation_steps, True),
    )
    driver_args = dict(history=history, params=_params(verbose, epochs, steps), mode="fit",
                        validation_freq=validation_freq, initial_epoch=initial_epoch, keras_rng=rng_points)  # fmt: skip
    fit_stage = lambda t: t.fit(_lightning(module), train_dataloaders=train_loader, val_dataloaders=val_loader)  # noqa: E731
    _run(module, trainer, (keras_cbs, lightning_cbs), owned, driver_args, fit_stage)
    return history


@_surface_user_errors
def evaluate(module: BridgeModule, x: DataInput = None, y: ArrayTree = None, batch_size: Optional[int] = None,
             verbose: Union[int, str] = "auto", sample_weight: ArrayTree = None, steps: Optional[int] = None,
             return_dict: bool = False, callbacks: object = None, trainer: TrainerArgument = None) -> Any:  # fmt: skip
    """Keras ``Model.evaluate``: a scalar, a list in Keras's order, or (``return_dict``) a dict."""
    module.require_compiled()
    verbose = check_verbose(verbose)
    check_int("steps", steps, 1, allow_none=True)
    cbs = split_callbacks(callbacks)
    loader = data_dispatch.make_loader(x, y, sample_weight, DataOptions(batch_size=batch_size, steps=steps,
                                                                        mode="evaluate"))  # fmt: skip
    _prepare_keras_steps(module, "evaluate", eval=loader)
    _build(module, loader, "eval", _keras_rng(module))
    owned = {} if steps is None else {"limit_val_batches": steps}
    driver_args = dict(params=_params(verbose, 1, data_dispatch.loader_length(loader)), mode="evaluate",
                       keras_rng=_evaluation_draws(module, loader, steps))  # fmt: skip
    _run(
        module,
        trainer,
        cbs,
        owned,
        driver_args,
        lambda t: t.validate(_lightning(module), dataloaders=loader, verbose=False),
    )
    logs = dict(module.finish_eval_epoch())
    return logs if return_dict else module.ordered_results(logs)


@_surface_user_errors
def predict(module: BridgeModule, x: DataInput, batch_size: Optional[int] = None, verbose: Union[int, str] = "auto",
            steps: Optional[int] = None, callbacks: object = None, trainer: TrainerArgument = None) -> Any:  # fmt: skip
    """Keras ``Model.predict``: NumPy arrays in the model's output structure (single, list or dict)."""
    verbose = check_verbose(verbose)
    check_int("steps", steps, 1, allow_none=True)
    cbs = split_callbacks(callbacks)
    loader = data_dispatch.make_loader(x, options=DataOptions(batch_size=batch_size, steps=steps, mode="predict"))
    _prepare_keras_steps(module, "predict", predict=loader)
    check_input_names(module, unpack_x_y_sample_weight(loader.peek())[0])
    owned = {} if steps is None else {"limit_predict_batches": steps}
    driver_args = dict(params=_params(verbose, 1, data_dispatch.loader_length(loader)), mode="predict",
                       keras_rng=_evaluation_draws(module, loader, steps))  # fmt: skip
    # Gathered inside the run: whether it is distributed is known there (a 1-device run ignores a process group).
    predict_stage = lambda t: _gather_predictions(  # noqa: E731
        loader, t.predict(_lightning(module), dataloaders=loader, return_predictions=True)
    )
    outputs = _run(module, trainer, cbs, owned, driver_args, predict_stage)
    if not outputs:
        return None
    kind = output_structure(outputs[0])
    names = resolve_output_names(outputs[0], module.declared_output_names)
    columns = list(zip(*(flatten_outputs(o, names) for o in outputs)))
    arrays = [np.concatenate([_to_numpy(t) for t in col], axis=0) for col in columns]
    # Keras's structure (nested, namedtuples kept); a torch module's flat tuple comes back as a list.
    return pack_outputs(arrays, names, kind if module.is_keras or kind.kind != "list" else "list")


def _keras_rng(module: BridgeModule, seed: Optional[int] = None) -> bool:
    # Keras's draws are taken wherever shuffles follow Keras's stream; with the independent seeded shuffle
    # (a fit given a seed), only for a Keras model (whose randomness is compared with Keras's).
    keras_stream = seed is None and keras_rng.keras_stream()
    return bool(module.is_keras or keras_stream)


def _evaluation_draws(module: BridgeModule, loader: Loader, steps: Optional[int]) -> Tuple[Any, Any]:
    return keras_rng.NO_DRAWS, _pass_draws(_keras_rng(module), loader, steps, True)


def _pass_draws(
    draws: bool, loader: Optional[Loader], steps: Optional[int], evaluation: bool = False
) -> keras_rng.PassDraws:
    if not draws or loader is None:
        return keras_rng.NO_DRAWS
    return loader.keras_pass_draws(steps, evaluation)


def _params(verbose: int, epochs: int, steps: Optional[int]) -> Dict[str, Any]:
    return {"verbose": verbose, "epochs": epochs, "steps": steps}


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def _gather_predictions(loader: Loader, outputs: Optional[List[object]]) -> Any:
    """Under DDP, every process's per-batch predictions, in input order, on every process (a collective)."""
    dist = torch.distributed
    if not data_dispatch.group_in_use():  # no process group, or one this (1-device) run does not use
        return outputs
    local = [map_structure(lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t, o) for o in outputs or []]
    per_rank: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(per_rank, local)
    return loader.unshard(per_rank)
