"""One Lightning callback that drives Keras callbacks with Keras's hook order, logs and rules.

Keras's ``CallbackList`` order is kept: the user's callbacks, then ``History``, then the progress
bar, all receiving the same ``logs`` dict (so a callback that adds ``learning_rate`` to the epoch logs
is seen by History and the bar). Lightning's sanity check never reaches Keras callbacks. Batch-end
logs are computed only when some callback will read them.

Under DDP: callbacks whose only effect is files or output (CSVLogger, ModelCheckpoint, TensorBoard,
RemoteMonitor, the progress bar) run on global rank 0 only; the others run on every process with
the same (synchronised) epoch logs. ``stop_training`` is reduced across processes (any process
stopping stops all), learning rates are broadcast from rank 0 after the epoch-begin and epoch-end
hooks, and weights restored by ``EarlyStopping(restore_best_weights=True)`` are broadcast from rank 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback as LightningCallback
from lightning.pytorch.utilities.types import STEP_OUTPUT

import keras_bridge.callbacks.model_facade as model_facade
from keras_bridge.callbacks.convert import runs_keras_callbacks, translate
from keras_bridge.callbacks.host import CallbackHost, callback_host
from keras_bridge.callbacks.monitor import check_logged, check_monitored, resolve_monitor_op
from keras_bridge.callbacks.ports.base import Port
from keras_bridge.callbacks.ports.registry import RANK_ZERO_ONLY
from keras_bridge.callbacks.resumed_logs import drop_logged_epochs, mark_start
from keras_bridge.data.keras_rng import NO_DRAWS, PassDraws
from keras_bridge.optimizers.base import get_learning_rate, set_learning_rate
from keras_bridge.trainer.preemption import note_saved, stop_agreed
from keras_bridge.utils.compat import (
    is_default_keras_hook,
    keras_backup_save,
    keras_initial_epoch,
    set_keras_initial_epoch,
    set_start_epoch,
    skip_no_op_batch_hooks,
)
from keras_bridge.utils.keras import is_keras_object

if TYPE_CHECKING:
    import keras

_BATCH_END_HOOKS = ("on_batch_end", "on_train_batch_end")
_BATCH_BEGIN_HOOKS = ("on_batch_begin", "on_train_batch_begin")
_TEST_BATCH_END_HOOKS = ("on_test_batch_end",)
_MODES = {"fit": "fit", "validate": "evaluate", "test": "evaluate", "predict": "predict"}


def _overrides(cb: keras.callbacks.Callback, names: Sequence[str]) -> bool:
    """True if any hook in ``names`` is not Keras's default no-op (instance attributes count: LambdaCallback)."""
    return any(not is_default_keras_hook(getattr(cb, n, None)) for n in names)


def _reads(cb: keras.callbacks.Callback, names: Sequence[str]) -> bool:
    if isinstance(cb, Port) and cb._kb_batch_logs is not None:  # a port saying whether its batch hooks matter
        return bool(cb._kb_batch_logs)
    saves = is_keras_object(cb, "callbacks.ModelCheckpoint") or is_keras_object(cb, "callbacks.BackupAndRestore")
    if saves and cb.save_freq == "epoch":
        return False  # their batch hooks only count batches for an integer save_freq
    return _overrides(cb, names)


def _rank_zero_only(cb: keras.callbacks.Callback) -> bool:
    return any(is_keras_object(cb, f"callbacks.{name}") for name in RANK_ZERO_ONLY)


def _continue_history(history: Any, epochs: List[int], start_epoch: int) -> None:
    """Keep a restored History's epochs before ``start_epoch`` (and their values), to be appended to."""
    kept = [e for e in epochs if e < start_epoch]
    if len(kept) < len(epochs):
        history.history = {k: v[: len(kept)] if len(v) == len(epochs) else v for k, v in history.history.items()}
    history.epoch = kept


class _LazyLogs:
    """Compute a logs dict at most once, on first use."""

    def __init__(self, fn: Callable[[], Dict[str, float]]) -> None:
        self._fn = fn
        self._value: Optional[Dict[str, float]] = None

    def __call__(self) -> Dict[str, float]:
        if self._value is None:
            self._value = self._fn()
        return self._value


class KerasCallbackDriver(LightningCallback):
    """Run Keras callbacks (``keras.callbacks.Callback`` objects) inside a Lightning run.

    ``fit(callbacks=[...])`` builds one; :func:`~keras_bridge.callbacks.to_lightning` builds one for a
    plain ``lightning.Trainer`` (then ``model``, ``params`` and ``mode`` are found when the run starts).
    The module is read through its :class:`~keras_bridge.callbacks.host.CallbackHost`: a
    ``KerasModule`` is its own, any other ``LightningModule`` is read from what it logs.

    Args:
        callbacks: the user's Keras callbacks, in order (translated by
            :func:`~keras_bridge.callbacks.convert.translate`).
        history: the History callback appended after them (or None).
        progbar: the progress-bar logger appended last (or None; rank 0 only).
        params: Keras ``params`` (``verbose``, ``epochs``, ``steps``); None: from the Trainer.
        model: what ``callback.model`` should be; None: from the module at ``setup``.
        mode: ``"fit"``, ``"evaluate"``, ``"predict"``, or None to follow the Trainer's current stage.
        validation_freq: Keras's ``validation_freq`` (int or list of 1-based epochs).

    Example:
        >>> import keras_bridge as kb, keras
        >>> driver = KerasCallbackDriver([keras.callbacks.EarlyStopping(patience=1)], keras.callbacks.History(), None)
        >>> [type(cb).__name__ for cb in driver.all]
        ['EarlyStopping', 'History']
    """

    def __init__(
        self,
        callbacks: Sequence[Any],
        history: Any = None,
        progbar: Any = None,
        params: Optional[Dict[str, Any]] = None,
        model: Any = None,
        mode: Optional[str] = "fit",
        validation_freq: Union[int, Sequence[int]] = 1,
        keras_rng: Tuple[PassDraws, PassDraws] = (NO_DRAWS, NO_DRAWS),
    ) -> None:
        # A ProgbarLogger in the list is replaced by the bridge's own bar (Keras keeps one bar too).
        self._given = [cb for cb in callbacks if not is_keras_object(cb, "callbacks.ProgbarLogger")]
        self.user_callbacks = [translate(cb, native=runs_keras_callbacks(model)) for cb in self._given]
        self.history = history
        self.progbar = progbar
        self.params = params
        self.model = model
        self.mode = mode
        self.validation_freq = validation_freq
        # Take the draws Keras's DataLoader takes around a pass that our loaders do not (training, evaluation).
        self.keras_rng = keras_rng
        self.last_logs: Dict[str, float] = {}
        # The batch in flight, for error messages: (stage, epoch, batch index).
        self.position: Optional[Tuple[str, int, int]] = None
        self._own_model = model is None  # to_lightning: found at setup
        self.host: Optional[CallbackHost] = None  # the running module's, from setup on
        skip_no_op_batch_hooks(self)  # Lightning need not call the batch hooks it leaves to pl.Callback
        self._hosted: Any = None  # the module `host` serves
        self._first_epoch = 0  # of this run (a resumed run starts later)
        self._own_params = params is None
        self._select(rank_zero=True)
        if model is not None:
            self._set_model(model)
        if params is not None:
            self._set_params(params)

    @property
    def state_key(self) -> str:
        # The key under which checkpoints already written hold this callback's state (its former class name).
        return "KerasCallbackAdapter"

    # ---------------------------------------------------------------- which callbacks run here
    def _select(self, rank_zero: bool) -> None:
        if not rank_zero:
            self.progbar = None
        users = [cb for cb in self.user_callbacks if rank_zero or not _rank_zero_only(cb)]
        self.active = users
        self.all: List[Any] = users + [c for c in (self.history, self.progbar) if c is not None]
        self._batch_readers = [c for c in users if _reads(c, _BATCH_END_HOOKS)]
        self._nan_guards = [c for c in self._batch_readers if is_keras_object(c, "callbacks.TerminateOnNaN")]
        self._batch_begin = [c for c in users if _reads(c, _BATCH_BEGIN_HOOKS)]
        self._test_batch_readers = [c for c in users if _overrides(c, _TEST_BATCH_END_HOOKS)]

    def _set_model(self, model: Any) -> None:
        self.model = model
        for cb in self.user_callbacks + [c for c in (self.history, self.progbar) if c is not None]:
            cb.set_model(model)

    def _set_params(self, params: Dict[str, Any]) -> None:
        self.params = params
        for cb in self.all:
            cb.set_params(dict(params))

    def _current_mode(self, trainer: pl.Trainer) -> str:
        return self.mode or _MODES.get(str(trainer.state.fn.value if trainer.state.fn else "fit"), "fit")

    def _params_from(self, trainer: pl.Trainer, steps: Optional[float]) -> None:
        if self._own_params:
            verbose = 1 if self.progbar is not None else 0
            epochs = trainer.max_epochs if self._current_mode(trainer) == "fit" else 1
            steps = None if steps is None or steps == float("inf") else int(steps)
            self._set_params({"verbose": verbose, "epochs": epochs, "steps": steps})

    # ---------------------------------------------------------------- run start / end
    def _host_of(self, pl_module: pl.LightningModule) -> CallbackHost:
        # One host per module for this driver: `self.model` stays the same object across runs.
        if self.host is None or self._hosted is not pl_module:
            self.host, self._hosted = callback_host(pl_module), pl_module
        return self.host

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        host = self._host_of(pl_module)
        model = host.callback_model if self._own_model else self.model
        # Keras's own file-writing callbacks assume one process; under DDP their ports write once.
        native = runs_keras_callbacks(model) and trainer.world_size == 1
        self.user_callbacks = [translate(cb, native=native) for cb in self._given]
        self._select(rank_zero=trainer.is_global_zero)
        self._set_model(model)
        if self.params is not None:
            self._set_params(self.params)
        for port in self._ports():
            port._kb_bind(trainer, host)
        if self.history is not None and stage == "fit":
            host.history = self.history
        model_facade.attach_savers(host)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the optimizers exist, before the fit loop starts: where a port restores loop state.
        for port in self._ports():
            port._kb_on_fit_start()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        host = self._host_of(pl_module)
        model_facade.detach_savers(host)
        model_facade.release_saves(host)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        host = self._host_of(pl_module)
        model_facade.detach_savers(host)
        model_facade.release_saves(host)
        self._mirror_ports()

    def _save_for_preemption(self, trainer: pl.Trainer, at_epoch_end: bool) -> None:
        # SIGTERM was agreed on (keras_bridge.trainer.preemption): Lightning stops after this boundary.
        for cb in self.user_callbacks:
            text = None
            if isinstance(cb, Port):
                text = cb._kb_save_for_preemption(at_epoch_end)
            elif is_keras_object(cb, "callbacks.BackupAndRestore") and trainer.is_global_zero:
                if not at_epoch_end or cb.save_freq != "epoch":  # Keras's own callback, on a Keras model
                    keras_backup_save(cb)
                text = f"BackupAndRestore saved a backup in {cb.backup_dir} (resumes at the start of its epoch)."
            if text:
                note_saved(trainer, text)

    def describe_position(self) -> str:
        """The batch in flight in words, for error messages.

        For example ``"training batch 3 of epoch 2"``: batches counted from 0, epochs from 1 as Keras prints them.
        """
        if self.position is None:
            return "the first batch"
        stage, epoch, batch = self.position
        if stage in ("training", "validation"):
            return f"{stage} batch {batch} of epoch {epoch + 1}"
        return f"{stage} batch {batch}"

    def _ports(self) -> List[Port]:
        """The user's callbacks that are ports (they take the ``_kb_*`` hooks of :class:`Port`)."""
        return [cb for cb in self.user_callbacks if isinstance(cb, Port)]

    def _mirror_ports(self) -> None:
        for port in self._ports():  # the user's Keras object gets its state
            port._kb_mirror()

    def _sync_stop(self, trainer: pl.Trainer) -> None:
        flag = bool(getattr(self.model, "stop_training", False))
        # every process must take the same decision, or the others wait forever
        flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if flag:
            self.model.stop_training = True
            trainer.should_stop = True

    def _sync_learning_rates(self, trainer: pl.Trainer) -> None:
        if trainer.world_size == 1 or not trainer.optimizers:
            return
        # LR callbacks decide from synchronised logs; rank 0's value makes any divergence impossible.
        optimizer = trainer.optimizers[0]
        if not optimizer.param_groups:  # a Keras model's own train_step applies its own optimizers
            return
        local = get_learning_rate(optimizer)
        chosen = trainer.strategy.broadcast(local, src=0)
        if chosen != local:
            set_learning_rate(optimizer, chosen)

    def _sync_restored_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size == 1 or not any(getattr(cb, "restore_best_weights", False) for cb in self.active):
            return
        network = self._host_of(pl_module).model
        state = trainer.strategy.broadcast(network.state_dict(), src=0)
        network.load_state_dict(state)

    # ---------------------------------------------------------------- fit
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._params_from(trainer, trainer.num_training_batches)
        self.model.stop_training = False
        self._first_epoch = trainer.current_epoch
        for cb in self.active:
            resolve_monitor_op(cb, self._host_of(pl_module))
        # trainer.fit(ckpt_path=...) restored the History of the checkpoint (the module's extra state):
        # it goes on from there rather than starting again.
        resumed_epochs = list(self.history.epoch) if self.history is not None and trainer.ckpt_path else None
        # Keras's BackupAndRestore asks its fit to resume at an epoch through the model (where the value
        # stays, as in Keras); whether a backup was restored in this fit is told by a fresh value.
        stale = keras_initial_epoch(self.model)
        set_keras_initial_epoch(self.model, None)
        for cb in self.all:
            cb.on_train_begin({})
        restored = keras_initial_epoch(self.model)
        if restored is None:
            set_keras_initial_epoch(self.model, stale)
        if resumed_epochs is not None:
            _continue_history(self.history, resumed_epochs, trainer.current_epoch)
        resume = keras_initial_epoch(self.model)
        if resume:
            set_start_epoch(trainer, resume)
        # A resumed run logs every epoch once: what the killed run logged from the resumed epoch on goes.
        ports = self._ports()
        resumed_at = next((p._kb_resumed_epoch for p in ports if p._kb_resumed_epoch is not None), restored)
        if resumed_at is not None:
            drop_logged_epochs(self.active, int(resumed_at))
        mark_start(self.active, trainer.current_epoch)
        # A backup restored in the middle of an epoch (ResumableCheckpoint): Lightning continues that
        # epoch without its start hooks; the callbacks see it begin, as they did before the interruption,
        # and then the restored optimizer state (learning rate included) is the interrupted run's again.
        resumed = [port for port in ports if port._kb_resumed_mid_epoch]
        if resumed:
            self._begin_epoch(trainer, trainer.current_epoch)
            for port in resumed:
                port._kb_reapply_training_state()

    def _begin_epoch(self, trainer: pl.Trainer, epoch: int) -> None:
        freq = self.validation_freq
        if isinstance(freq, (list, tuple, set)):
            trainer.check_val_every_n_epoch = 1 if (epoch + 1) in freq else 10**9
        for cb in self.all:
            cb.on_epoch_begin(epoch, {})

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin_epoch(trainer, trainer.current_epoch)
        self.keras_rng[0].start()
        self._sync_learning_rates(trainer)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        self.position = ("training", trainer.current_epoch, batch_idx)
        self.keras_rng[0].batch(batch)  # an in-batch shuffle Keras draws when it reads the batch
        for cb in self._batch_begin:
            cb.on_train_batch_begin(batch_idx, {})

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: object, batch_idx: int
    ) -> None:
        host = self._host_of(pl_module)
        logs = _LazyLogs(lambda: host.batch_logs(training=True))
        if self._batch_readers:
            if self._nan_guards and batch_idx == 0 and trainer.current_epoch == self._first_epoch:
                check_logged(self._nan_guards[0], "loss", logs(), "batch")
            for cb in self._batch_readers:
                cb.on_train_batch_end(batch_idx, logs())
            self._sync_stop(trainer)
            if self._nan_guards and trainer.should_stop and not math.isfinite(logs().get("loss", 0.0)):
                # TerminateOnNaN stopped the run: no checkpoint written from now on replaces a good one.
                model_facade.hold_saves(host)
        if self.progbar is not None:
            self.progbar.update_lazily(batch_idx, logs)
        if batch_idx + 1 == trainer.num_training_batches:
            self.keras_rng[0].end()  # Keras opens the next pass's iterator when a pass ends
        if stop_agreed(trainer):
            self._save_for_preemption(trainer, at_epoch_end=False)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self._current_mode(trainer) == "evaluate":
            batches = trainer.num_test_batches if trainer.testing else trainer.num_val_batches
            self._params_from(trainer, sum(batches) if batches else None)
        for cb in self._test_callbacks(trainer):
            cb.on_test_begin({})
        self.keras_rng[1].start()

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int, *_: int
    ) -> None:
        if trainer.sanity_checking:
            return
        stage = "evaluation" if self._current_mode(trainer) == "evaluate" else "validation"
        self.position = (stage, trainer.current_epoch, batch_idx)
        for cb in self._test_callbacks(trainer):
            cb.on_test_batch_begin(batch_idx, {})

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: STEP_OUTPUT,
        batch: object,
        batch_idx: int,
        *_: int,
    ) -> None:
        if trainer.sanity_checking:
            return
        host = self._host_of(pl_module)
        logs = _LazyLogs(lambda: host.batch_logs(training=False))
        for cb in self._test_batch_readers:
            cb.on_test_batch_end(batch_idx, logs())
        if self._current_mode(trainer) == "evaluate" and self.progbar is not None:
            self.progbar.update_lazily(batch_idx, logs)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.keras_rng[1].end()  # Keras opens the next pass's iterator when a pass ends
        logs = dict(self._host_of(pl_module).finish_eval_epoch())
        self.last_logs = logs
        for cb in self._test_callbacks(trainer):
            cb.on_test_end(logs)

    on_test_start = on_validation_start
    on_test_batch_start = on_validation_batch_start  # type: ignore[assignment]
    on_test_batch_end = on_validation_batch_end  # type: ignore[assignment]
    on_test_end = on_validation_end

    def _test_callbacks(self, trainer: pl.Trainer) -> List[Any]:
        # Inside fit, Keras's bar stays silent during validation.
        return self.all if self._current_mode(trainer) == "evaluate" else self.active

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.keras_rng[0].end(epoch_over=True)  # a carried-over pass that ran out before the epoch's steps
        epoch = trainer.current_epoch
        logs = self._host_of(pl_module).finish_train_epoch()
        for cb in self.active:
            check_monitored(cb, logs)
        for cb in self.all:
            cb.on_epoch_end(epoch, logs)
        self.last_logs = logs
        if stop_agreed(trainer):
            self._save_for_preemption(trainer, at_epoch_end=True)
        self._sync_learning_rates(trainer)
        self._sync_stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for cb in self.all:
            cb.on_train_end(dict(self.last_logs))
        self._mirror_ports()
        self._sync_restored_weights(trainer, pl_module)

    # ---------------------------------------------------------------- predict
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._params_from(trainer, sum(trainer.num_predict_batches) if trainer.num_predict_batches else None)
        for cb in self.all:
            cb.on_predict_begin({})
        self.keras_rng[1].start()

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int, *_: int
    ) -> None:
        self.position = ("prediction", 0, batch_idx)
        for cb in self.active:
            cb.on_predict_batch_begin(batch_idx, {})

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: object,
        batch: object,
        batch_idx: int,
        *_: int,
    ) -> None:
        for cb in self.active:
            cb.on_predict_batch_end(batch_idx, {"outputs": outputs})
        if self.progbar is not None:
            self.progbar.update_lazily(batch_idx, None)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.keras_rng[1].end()
        for cb in self.all:
            cb.on_predict_end({})
