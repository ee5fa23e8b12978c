"""Keras's ``BackupAndRestore`` with an exact resume on Lightning.

Keras's callback saves ``backup_dir/latest.weights.h5`` (weights and optimizer variables) and
``training_metadata.json`` (``{"epoch": completed epochs, "batch": last batch}``) every epoch or every
``save_freq`` batches, restores both in ``on_train_begin`` (training resumes at the saved epoch,
epoch-granular as in Keras), and deletes ``backup_dir`` at the end of a completed ``fit``.

The port keeps those rules and file names, and saves what an exact resume on torch needs: the
wrapped model's ``state_dict`` (for a Keras model this includes its seed-generator state), the torch
optimizer's and LR scheduler's ``state_dict`` (momentum buffers, Keras ``iterations``, the schedule's
step), and the epoch. They go into the one ``latest.weights.h5`` (see
:func:`keras_bridge.saving.formats.write_state_file`), written atomically, so a process killed at any moment
leaves either the previous backup or the new one. On resume every process loads the backup (the
decision that it exists is rank 0's, broadcast); only rank 0 writes and deletes files.

Example:
    >>> import keras_bridge as kb
    >>> cb = kb.callbacks.BackupAndRestore("backup")
    >>> cb._weights_path
    'backup/latest.weights.h5'
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import keras_bridge.saving.formats as saving
import keras_bridge.saving.state as _state
from keras_bridge.callbacks.ports.base import BoundPort, lazy_ports, stand_in
from keras_bridge.saving.atomic import atomic_write
from keras_bridge.utils.compat import set_keras_initial_epoch, set_start_epoch

if TYPE_CHECKING:
    import keras


class _BackupAndRestore(BoundPort):
    """Keras's ``BackupAndRestore`` with an exact, rank-safe resume (see :mod:`keras_bridge.callbacks.ports.backup`).

    Args:
        backup_dir: the folder for the backup files (deleted after a completed fit by default).
        save_freq: ``"epoch"`` or a number of batches between backups. Defaults to ``"epoch"``.
        double_checkpoint: keep the previous backup as ``*.bkp`` files, used if the latest cannot be
            read. Defaults to ``False``.
        delete_checkpoint: delete ``backup_dir`` when fit completes. Defaults to ``True``.
    """

    _kb_mirrored = ("_current_epoch", "_last_batch_seen", "_batches_seen_since_last_saving")

    # ---------------------------------------------------------------- restore
    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._restore_with_fallback(self._load_model)

    def _restore_with_fallback(self, restore: Callable[[], None]) -> None:
        try:
            restore()
        except OSError:
            # A latest backup that cannot be read: fall back to the previous one, as Keras does.
            if not self._agreed(os.path.exists(self._prev_weights_path)):
                raise
            if self._kb_is_writer:
                _copy(self._prev_weights_path, self._weights_path)
                if os.path.exists(self._prev_training_metadata_path):
                    _copy(self._prev_training_metadata_path, self._training_metadata_path)
            self._barrier()
            restore()

    def _load_model(self) -> None:
        if not self._agreed(os.path.exists(self._weights_path)):
            return
        states, attrs = saving.read_state_file(self._weights_path)
        module, trainer = self._kb_module, self._kb_trainer
        _state.load_model_state(module, states["model"], self._weights_path)
        _state.apply_training_state(trainer, states, module)
        epoch = int(attrs["epoch"])  # the copy inside the atomic file, never out of step with the weights
        set_start_epoch(trainer, epoch)
        set_keras_initial_epoch(self.model, epoch)

    def _agreed(self, local: bool) -> bool:
        # Rank 0 looks at the file system; every process acts on its answer.
        trainer = self._kb_trainer
        if trainer is None or trainer.world_size == 1:
            return local
        return bool(trainer.strategy.broadcast(local, src=0))

    def _barrier(self) -> None:
        if self._kb_trainer is not None and self._kb_trainer.world_size > 1:
            self._kb_trainer.strategy.barrier("BackupAndRestore")

    # ---------------------------------------------------------------- backup
    def _save_model(self) -> None:
        if not self._kb_is_writer or saving.saves_held(self._kb_module, self._weights_path):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._weights_path):
            _copy(self._weights_path, self._prev_weights_path)
        if self.double_checkpoint and os.path.exists(self._training_metadata_path):
            _copy(self._training_metadata_path, self._prev_training_metadata_path)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        saving.write_state_file(self._weights_path, self._kb_module, metadata)
        with atomic_write(self._training_metadata_path) as tmp, open(tmp, "w") as f:
            f.write(json.dumps(metadata))

    def _kb_save_for_preemption(self, at_epoch_end: bool) -> Optional[str]:
        """SIGTERM: write the backup now, with Keras's rules (it resumes at the start of its epoch)."""
        if not at_epoch_end or self.save_freq != "epoch":  # an epoch-end backup was just written otherwise
            self._save_model()
        return f"BackupAndRestore saved a backup in {self.backup_dir} (resumes at the start of its epoch)."

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.delete_checkpoint and self._kb_is_writer and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)


def _copy(source: str, target: str) -> None:
    with atomic_write(target) as tmp:
        shutil.copyfile(source, tmp)


def from_keras(callback: keras.callbacks.Callback) -> Any:
    """The port configured as a ``keras.callbacks.BackupAndRestore`` instance."""
    return stand_in(
        __getattr__("BackupAndRestore"),
        callback,
        backup_dir=callback.backup_dir,
        save_freq=callback.save_freq,
        double_checkpoint=callback.double_checkpoint,
        delete_checkpoint=callback.delete_checkpoint,
    )


__getattr__ = lazy_ports(__name__, {"BackupAndRestore": _BackupAndRestore})
