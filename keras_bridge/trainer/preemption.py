"""SIGTERM during ``fit`` (a preempted job): stop at the next batch boundary, save, exit with status 143.

Schedulers (SLURM, Kubernetes, torchrun's agent) announce preemption with SIGTERM, then kill. Lightning
notices the signal and leaves ``fit`` with a ``SystemExit`` that has no code, so a preempted process
would exit with status 0: the scheduler records success and does not requeue. The bridge instead:

* replaces the SIGTERM handler for the fit (main thread only) with one that only records the signal;
* decides at the end of every training batch, and of every epoch, whether any process received it
  (one decision for all processes under DDP), and if so tells Lightning to stop there;
* lets resumable callbacks save a resume point at that boundary (``kb.callbacks.ResumableCheckpoint``:
  the exact position; ``BackupAndRestore``: Keras's epoch-granular backup), see
  :meth:`keras_bridge.callbacks.driver.KerasCallbackDriver.on_train_batch_end`;
* ends ``fit`` with :class:`TrainingPreempted`, a ``SystemExit`` with code 143 (128 + SIGTERM, what a
  shell reports for a process ended by SIGTERM, so SLURM's ``--requeue`` and Kubernetes' restart
  policies treat the run as failed and retry it), after printing what was saved and how to resume.

Rerunning the same script then resumes from the saved point.

Example:
    >>> err = TrainingPreempted("stopped")
    >>> err.code, str(err)
    (143, 'stopped')
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, List, Optional

import lightning.pytorch as pl
from lightning.pytorch.utilities.types import STEP_OUTPUT

from keras_bridge.utils.compat import request_sigterm_stop

#: The exit status of a preempted fit: 128 + SIGTERM, as a shell reports a process SIGTERM ended.
PREEMPTED_EXIT_CODE = 128 + int(signal.SIGTERM)


class TrainingPreempted(SystemExit):
    """``fit`` stopped by SIGTERM at a batch boundary; uncaught, the process exits with status 143.

    Catch it to run clean-up code after a preempted ``fit`` (then exit non-zero, or the scheduler
    records a success). ``str(err)`` says what was saved and how to resume.
    """

    def __init__(self, message: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PreemptionGuard(pl.Callback):
    """Records SIGTERM during ``fit`` and turns it into one agreed stop at a batch boundary.

    Installed first among the run's callbacks by :class:`~keras_bridge.trainer.connector.TrainerConnector`,
    so the Keras callbacks of the same batch already see the decision (``trainer.received_sigterm``).
    """

    def __init__(self) -> None:
        self.received = False
        self.stopping = False
        self.trained = False  # a fit's training began (else: evaluate / predict, stopped by Lightning itself)
        self.saved: List[str] = []
        self._previous: Any = None
        self._installed = False

    def _record(self, signum: int, frame: Any) -> None:
        self.received = True  # nothing else: the decision is taken at the next batch boundary

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stopping, self.saved, self.trained = False, [], True
        self.received = bool(trainer.received_sigterm)  # a signal before training began
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._record)
            self._installed = True

    def _decide(self, trainer: pl.Trainer) -> None:
        flag = self.received
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if flag and not self.stopping:
            self.stopping = True
            request_sigterm_stop(trainer)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: STEP_OUTPUT, batch: object, batch_idx: int
    ) -> None:
        self._decide(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._decide(trainer)

    def _uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._uninstall()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._uninstall()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._uninstall()

    def message(self, epoch: int) -> str:
        """What the user reads when the process ends: where it stopped, what was saved, how to resume."""
        where = (
            f"fit was stopped by SIGTERM (preemption) during epoch {epoch + 1}"
            if self.trained
            else "stopped by SIGTERM"
        )
        lines = [f"keras_bridge: {where}."]
        if self.saved:
            lines += [f"  {text}" for text in self.saved]
            lines.append("  Run the same script again to resume from there.")
        else:
            lines.append(
                "  No resume point was saved: pass kb.callbacks.ResumableCheckpoint(backup_dir) (exact resume) or "
                "keras.callbacks.BackupAndRestore(backup_dir) to fit's callbacks to resume after a preemption."
            )
        lines.append(f"  Exiting with status {PREEMPTED_EXIT_CODE} (128 + SIGTERM): the scheduler can requeue the job.")
        return "\n".join(lines)


def note_saved(trainer: pl.Trainer, text: str) -> None:
    """Record, for the exit message, that a callback saved a resume point on preemption."""
    guard = find_guard(trainer)
    if guard is not None and text not in guard.saved:
        guard.saved.append(text)


def stop_agreed(trainer: pl.Trainer) -> bool:
    """True once the processes agreed to stop for SIGTERM (only under the bridge's guard: a plain Lightning
    Trainer's flag may be set on one process only, and a save that gathers from all would then hang).
    """
    guard = find_guard(trainer)
    return guard is not None and guard.stopping


def find_guard(trainer: pl.Trainer) -> Optional[PreemptionGuard]:
    return next((cb for cb in getattr(trainer, "callbacks", None) or [] if isinstance(cb, PreemptionGuard)), None)


def preempted(guard: PreemptionGuard, trainer: pl.Trainer) -> TrainingPreempted:
    """The :class:`TrainingPreempted` that replaces Lightning's ``SIGTERMException``; printed on rank 0."""
    text = guard.message(trainer.current_epoch)
    if trainer.is_global_zero:
        print(text, file=sys.stderr, flush=True)
    return TrainingPreempted(text)


def is_sigterm_exit(exc: Optional[BaseException]) -> bool:
    """True for Lightning's ``SIGTERMException`` (a ``SystemExit`` raised when the loop saw SIGTERM)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(exc, SIGTERMException)
