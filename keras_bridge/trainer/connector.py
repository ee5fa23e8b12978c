"""The one place a ``lightning.Trainer`` is made or borrowed for ``fit``, ``evaluate`` and ``predict``.

Keras arguments own some Trainer options (``epochs`` is ``max_epochs``, ``steps_per_epoch`` is
``limit_train_batches``, ``validation_freq`` is ``check_val_every_n_epoch``, ``steps`` limits the
evaluation or prediction batches). :class:`TrainerConnector` applies them for one call:

* ``trainer=None`` or a dict: a new Trainer with the bridge's quiet defaults (no logger, no
  checkpointing, no Lightning progress bar or summary, no step-level logging), the dict's options on top. A dict option
  that contradicts a Keras argument is an error naming both.
* a ready ``lightning.Trainer``: borrowed. Every Keras-owned option is set for the call (those no
  Keras argument gives take Keras's meaning: all batches), the bridge's callbacks are attached, and
  the Trainer is given back as it was, whatever happens during the call.

The data loaders shard themselves (``batch_size`` is the global batch), so Lightning's
``use_distributed_sampler`` is off for the call in both cases. The Trainer's world size is declared
for the call (:func:`~keras_bridge.data.distributed.set_run_world`): a 1-device run ignores a process
group left by an earlier ``ddp`` run. When a process started by Lightning's ``ddp`` launcher fails,
the launching process's error names it (:func:`failed_process`).

Example:
    >>> import lightning.pytorch as pl
    >>> trainer = pl.Trainer(max_epochs=7, logger=False, enable_checkpointing=False,
    ...                      enable_progress_bar=False, enable_model_summary=False)
    >>> with TrainerConnector(trainer, [], {"max_epochs": 2}) as run:
    ...     run.max_epochs
    2
    >>> trainer.max_epochs
    7
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import warnings
from types import TracebackType
from typing import Any, Dict, Iterator, List, Optional, Sequence, Type, Union

import lightning.pytorch as pl

from keras_bridge.data.distributed import set_run_world
from keras_bridge.trainer.preemption import PreemptionGuard, is_sigterm_exit, preempted
from keras_bridge.trainer.random_streams import KeepRandomStreams
from keras_bridge.utils.compat import (
    get_use_distributed_sampler,
    launched_processes,
    main_file,
    reruns_the_script,
    set_use_distributed_sampler,
    skip_no_op_batch_hooks,
    started_as_module,
)

#: Trainer options that a Keras argument decides, and that argument's name.
#: What ``fit`` / ``evaluate`` / ``predict`` take as ``trainer``: a Trainer, a dict of its options, or None.
TrainerArgument = Optional[Union[pl.Trainer, Dict[str, Any]]]

KERAS_OWNED = {
    "max_epochs": "epochs",
    "limit_train_batches": "steps_per_epoch",
    "check_val_every_n_epoch": "validation_freq",
    "limit_val_batches": "steps",
    "limit_predict_batches": "steps",
}
# What the batch limits mean in Keras when no argument sets them: every batch.
_KERAS_DEFAULTS: Dict[str, Any] = {"limit_train_batches": 1.0, "limit_val_batches": 1.0, "limit_predict_batches": 1.0}
_QUIET_DEFAULTS: Dict[str, Any] = dict(
    accelerator="auto",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_model_summary=False,
    enable_progress_bar=False,
    num_sanity_val_steps=0,
    # Keras logs epochs; a user who gives a logger asks for batch logs with `log_every_n_steps`.
    log_every_n_steps=0,
)
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Messages meant for Lightning users, about choices the bridge made on the user's behalf.
_LIGHTNING_USER_WARNINGS = (
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
    # A Keras model's own train_step applies its own optimizers (keras_bridge.trainer.keras_step).
    ".*configure_optimizers` returned `None`.*",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Hide Lightning's banners, tips and Lightning-user warnings (set KERAS_BRIDGE_LIGHTNING_LOGS=1 to see them)."""
    if os.environ.get("KERAS_BRIDGE_LIGHTNING_LOGS"):
        yield
        return
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    loggers = [logging.getLogger(n) for n in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=PossibleUserWarning)
        for pattern in _LIGHTNING_USER_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _read_option(trainer: pl.Trainer, name: str) -> Any:
    return trainer.fit_loop.max_epochs if name == "max_epochs" else getattr(trainer, name)


def _write_option(trainer: pl.Trainer, name: str, value: Any) -> None:
    if name == "max_epochs":
        trainer.fit_loop.max_epochs = value
    else:
        setattr(trainer, name, value)


class _InterruptRecorder(pl.Callback):
    """Keeps the ``KeyboardInterrupt`` that Lightning turns into ``SystemExit`` (see :class:`TrainerConnector`)."""

    def __init__(self) -> None:
        self.caught: Optional[KeyboardInterrupt] = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.caught = exception


def _not_distributed() -> bool:
    return False


class _RunWorld(pl.Callback):
    """Tells the loaders and the metrics whether this run is distributed (see :func:`set_run_world`).

    A process group left by an earlier ``ddp`` run is ignored by a 1-device run: the loaders shard
    nothing, and the torchmetrics states of the module are not synchronised for the run (they would
    wait for processes that do not take part).
    """

    def __init__(self) -> None:
        self._saved: List[Any] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        import torch
        import torchmetrics

        if trainer.world_size != 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        for metric in pl_module.modules():
            if isinstance(metric, torchmetrics.Metric):
                self._saved.append((metric, metric.distributed_available_fn))
                metric.distributed_available_fn = _not_distributed

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for metric, fn in self._saved:
            metric.distributed_available_fn = fn
        self._saved = []


class TrainerConnector:
    """A context manager giving the Trainer for one ``fit``/``evaluate``/``predict`` call.

    Ctrl-C behaves as in Keras: Lightning catches the ``KeyboardInterrupt``, shuts the run down, sets
    SIGINT to be ignored and exits the process (``SystemExit``); the connector gives the caller the
    ``KeyboardInterrupt`` instead (its traceback points where the run was interrupted) and puts the
    SIGINT handler back, so the model keeps the weights trained so far and a next call works.

    SIGTERM (a preempted job) stops ``fit`` at the next batch boundary, after the resumable callbacks
    saved a resume point, and ends it with :class:`~keras_bridge.trainer.preemption.TrainingPreempted`
    (exit status 143), see :mod:`keras_bridge.trainer.preemption`.

    The global random streams are those the call found, on every process, even where a distributed
    strategy's setup reseeds them (:mod:`keras_bridge.trainer.random_streams`).

    Args:
        trainer: ``None``, a dict of ``lightning.Trainer`` options, or a ready ``lightning.Trainer``.
        callbacks: Lightning callbacks to run during the call (the bridge's driver first).
        owned: the Keras-owned options for this call (keys of :data:`KERAS_OWNED`); absent keys keep
            the Trainer's (or Lightning's) own value.

    Raises:
        TypeError: ``trainer`` is of another type.
        ValueError: a ``trainer`` dict option contradicts a Keras argument.
    """

    def __init__(self, trainer: TrainerArgument, callbacks: Sequence[pl.Callback], owned: Dict[str, Any]) -> None:
        unknown = [k for k in owned if k not in KERAS_OWNED]
        if unknown:
            raise ValueError(f"Not Keras-owned Trainer options: {unknown}. Expected keys of {sorted(KERAS_OWNED)}.")
        if trainer is not None and not isinstance(trainer, (dict, pl.Trainer)):
            raise TypeError(
                "Expected `trainer` to be a dict of lightning.Trainer options or a lightning.Trainer. "
                f"Received: trainer of type {type(trainer).__name__}"
            )
        if isinstance(trainer, dict):
            _check_options(trainer)
            _check_conflicts(trainer, owned)
        self._given = trainer
        self._interrupts = _InterruptRecorder()
        self._preemption = PreemptionGuard()
        self._streams = KeepRandomStreams()
        # The streams first: no callback's setup draws before they are put back. Then the guard: the Keras
        # callbacks of a batch see its stop decision (they save a resume point).
        self._callbacks = [self._streams, self._preemption, *callbacks, self._interrupts, _RunWorld()]
        for callback in (self._streams, self._preemption, self._interrupts, self._callbacks[-1]):
            skip_no_op_batch_hooks(callback)  # the bridge's own: Lightning need not call their no-op hooks
        self._sigint: Any = None
        self._owned = dict(owned)
        self._saved: Dict[str, Any] = {}
        self._trainer: Optional[pl.Trainer] = None
        self._outer_world: Optional[int] = None

    @property
    def borrowed(self) -> bool:
        """True when the user passed a ready Trainer (it is restored after the call)."""
        return isinstance(self._given, pl.Trainer)

    def __enter__(self) -> pl.Trainer:
        if threading.current_thread() is threading.main_thread():
            self._sigint = signal.getsignal(signal.SIGINT)
        if isinstance(self._given, pl.Trainer):
            self._trainer = self._borrow(self._given)
        else:
            self._trainer = self._make(self._given or {})
        self._outer_world = set_run_world(self._trainer.world_size)
        _check_script_can_rerun(self._trainer)
        self._streams.capture()  # a distributed strategy's setup reseeds: see keras_bridge.trainer.random_streams
        return self._trainer

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._sigint is not None and signal.getsignal(signal.SIGINT) is not self._sigint:
            signal.signal(signal.SIGINT, self._sigint)  # Lightning ignores Ctrl-C once it caught one
        trainer = self._trainer
        if trainer is None:
            return
        set_run_world(self._outer_world)  # a plain Lightning run after this call trusts the process group again
        self._give_back(trainer)
        interrupt = self._interrupts.caught
        if exc_type is not None and issubclass(exc_type, SystemExit) and interrupt is not None:
            raise interrupt.with_traceback(interrupt.__traceback__) from None
        if is_sigterm_exit(exc):
            raise preempted(self._preemption, trainer) from None
        if exc is None and self._preemption.received and not self._preemption.stopping:
            # SIGTERM after the last stop decision (the run had finished): deliver it as if we were not here.
            os.kill(os.getpid(), signal.SIGTERM)
        if exc is not None and isinstance(exc, Exception):
            # A collective that lost its peer: give the dying process time to be reaped; else just look.
            lost_peer = any(word in str(exc) for word in ("Connection", "peer", "gloo", "NCCL", "timed out"))
            failed = failed_process(trainer, wait=10.0 if lost_peer else 0.0)
            if failed:
                raise RuntimeError(f"{failed} This process stopped with: {type(exc).__name__}: {exc}") from exc

    def _give_back(self, trainer: pl.Trainer) -> None:
        for cb in self._callbacks:
            if cb in trainer.callbacks:  # type: ignore[attr-defined]
                trainer.callbacks.remove(cb)  # type: ignore[attr-defined]
        if self.borrowed:
            for name, value in self._saved.items():
                if name == "use_distributed_sampler":
                    set_use_distributed_sampler(trainer, value)
                elif name == "should_stop":
                    trainer.should_stop = value
                else:
                    _write_option(trainer, name, value)

    def _make(self, options: Dict[str, Any]) -> pl.Trainer:
        kwargs = dict(_QUIET_DEFAULTS)
        kwargs.update(self._owned)
        user = dict(options)
        user_callbacks = user.pop("callbacks", None) or []
        if not isinstance(user_callbacks, (list, tuple)):
            user_callbacks = [user_callbacks]
        kwargs.update(user)
        kwargs["use_distributed_sampler"] = False
        kwargs["callbacks"] = self._callbacks + list(user_callbacks)
        with quiet_lightning():
            return pl.Trainer(**kwargs)

    def _borrow(self, trainer: pl.Trainer) -> pl.Trainer:
        for name, value in {**_KERAS_DEFAULTS, **self._owned}.items():
            self._saved[name] = _read_option(trainer, name)
            _write_option(trainer, name, value)
        self._saved["use_distributed_sampler"] = get_use_distributed_sampler(trainer)
        set_use_distributed_sampler(trainer, False)
        # A previous run's early stop must not end this call before it starts.
        self._saved["should_stop"] = trainer.should_stop
        trainer.should_stop = False
        trainer.callbacks[0:0] = self._callbacks  # type: ignore[attr-defined]
        return trainer


def failed_process(trainer: pl.Trainer, wait: float = 10.0) -> str:
    """Which process started by Lightning's ``ddp`` launcher failed, in words ("" when none did).

    On the launching process, the error a collective raises when another process died ("Connection
    closed by peer") does not say which one or why: this does, waiting up to ``wait`` seconds for a
    dying process to be reaped. (Lightning's child-process observer ends this process within ~5 s
    anyway; torchrun reports the failed rank itself.)
    """
    import time

    procs = launched_processes(trainer)
    deadline = time.monotonic() + wait
    while procs:
        codes = [proc.poll() for proc in procs]
        for local_rank, code in enumerate(codes, start=1):
            if code is not None and code < 0:
                name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
                return (
                    f"The process of local rank {local_rank} (pid {procs[local_rank - 1].pid}) was killed by {name}: "
                    "the whole DDP job stops (out of memory? killed by the system or a user?)."
                )
            if code:
                return (
                    f"The process of local rank {local_rank} (pid {procs[local_rank - 1].pid}) failed with exit code "
                    f"{code}: its error is printed above, prefixed [rank{local_rank}]. The whole DDP job stops."
                )
        if all(code == 0 for code in codes) or time.monotonic() > deadline:
            return ""
        time.sleep(0.1)
    return ""


def _check_script_can_rerun(trainer: pl.Trainer) -> None:
    """Lightning's ``ddp`` runs this program again per process: refuse, before training, a program that is
    not a script file (``python -c``, an ``exec``'d string, a notebook); the child processes would fail
    to start and the launching one be killed without a word.
    """
    if not reruns_the_script(trainer):
        return
    import sys

    if started_as_module():
        return  # python -m package.module: rerun as such
    program = sys.argv[0] if sys.argv else ""
    # The code running must be the file that would be rerun: a notebook kernel's sys.argv[0] is a file (its
    # launcher), but its __main__ has no __file__.
    running = main_file()
    if program and program != "-c" and os.path.isfile(program) and running and os.path.isfile(running):
        return
    if program == "-c":
        started = "`python -c`"
    elif program and os.path.isfile(program):
        started = "code that is not the program's file (a notebook, or exec() in a __main__ without __file__)"
    else:
        started = "an interactive session, standard input, a notebook or exec()"
    raise RuntimeError(
        f"strategy='ddp' starts the other processes by running this program again, but it was started from "
        f"{started} (sys.argv[0]={program!r}), which cannot be run again. Put the code in a script file and "
        "run `python train.py` (or `torchrun --nproc_per_node=N train.py`), or use strategy='ddp_spawn' "
        "(strategy='ddp_notebook' in a notebook), which starts the processes from this one."
    )


def _check_options(options: Dict[str, Any]) -> None:
    """Every key of a ``trainer`` dict must be a ``lightning.Trainer`` argument."""
    import inspect

    from keras_bridge.utils.errors import did_you_mean

    accepted = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    for key in options:
        if key not in accepted:
            raise ValueError(
                f"Unknown `trainer` option {key!r}: the dict's keys must be lightning.Trainer arguments."
                f"{did_you_mean(str(key), accepted)} Accepted: {', '.join(accepted)}. Received: trainer={options!r}"
            )


def _check_conflicts(options: Dict[str, Any], owned: Dict[str, Any]) -> None:
    for key, keras_arg in KERAS_OWNED.items():
        if key in options and key in owned and options[key] != owned[key]:
            raise ValueError(
                f"The `trainer` option {key}={options[key]!r} conflicts with the Keras argument "
                f"`{keras_arg}` (which sets {key}={owned[key]!r}). Set `{keras_arg}` instead."
            )
