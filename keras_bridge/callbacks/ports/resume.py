"""``ResumableCheckpoint``: a ``BackupAndRestore`` whose resume continues at the next batch, exactly.

Keras's ``BackupAndRestore`` resumes epoch-granular: the interrupted epoch starts again from its first
batch, from the weights of the last backup. This opt-in callback saves everything an unbroken run
would still hold at a batch boundary, so a process killed anywhere and restarted with the same script
ends with the weights, optimizer state and per-epoch History of a run that was never stopped:

* the model's tensors, the optimizer's and LR scheduler's state (as the ``BackupAndRestore`` port);
* Lightning's fit-loop state (epoch and batch counters, global step), with the position of the
  training data in its shuffled order: arrays, torch ``Dataset``s and ``keras.utils.PyDataset`` s
  continue at the next batch of the same order (the shuffle seed is saved too);
* the running training metrics of the interrupted epoch, the History so far, and the torch, NumPy
  and Python random states.

It writes ``backup_dir/latest.weights.h5`` (HDF5, no pickle) and ``training_metadata.json`` atomically
every ``save_freq`` batches and at the end of every epoch, and deletes ``backup_dir`` when ``fit``
completes (``delete_checkpoint=True``). Other callbacks keep their own state rules: an
``EarlyStopping`` restarts its patience count, as after Keras's ``BackupAndRestore``.
Under DDP every process's running metrics and random states are saved (gathered to rank 0, which
writes), and each process takes its own back: the resume is exact with the same number of processes.
SIGTERM (a preempted job) saves the position at the next batch boundary, see
:mod:`keras_bridge.trainer.preemption`.

Example:
    >>> import keras_bridge as kb
    >>> cb = kb.callbacks.ResumableCheckpoint("backup", save_freq=50)
    >>> cb.save_freq, cb._weights_path
    (50, 'backup/latest.weights.h5')
"""

from __future__ import annotations

import copy
import json
import os
import random
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import numpy as np
import torch

import keras_bridge.callbacks.ports.backup as backup
import keras_bridge.saving.formats as saving
import keras_bridge.saving.state as _state
from keras_bridge.callbacks.ports.base import keras_subclass
from keras_bridge.saving.atomic import atomic_write
from keras_bridge.utils.compat import fit_loop_state, load_fit_loop_state, on_last_training_batch

if TYPE_CHECKING:
    import lightning.pytorch as pl


def _metric_states(tracker: Any) -> Dict[str, Any]:
    """Every torchmetrics state of a stage tracker, keyed by the metric's module path."""
    import torchmetrics

    if tracker is None:
        return {}
    return {
        name: {key: copy.deepcopy(value) for key, value in metric.metric_state.items()}
        for name, metric in tracker.named_modules()
        if isinstance(metric, torchmetrics.Metric)
    }


def _load_metric_states(tracker: Any, states: Mapping[str, Any]) -> None:
    import torchmetrics

    metrics = {name: m for name, m in tracker.named_modules() if isinstance(m, torchmetrics.Metric)}
    if sorted(metrics) != sorted(states):
        raise ValueError(
            f"The backup's training metrics {sorted(states)} do not match the compiled ones {sorted(metrics)}: "
            "resume with the compile() arguments of the interrupted run."
        )
    for name, values in states.items():
        metric = metrics[name]
        for key, value in values.items():
            current = getattr(metric, key)
            if isinstance(current, torch.Tensor):
                value = value.to(device=current.device, dtype=current.dtype)
            setattr(metric, key, value)
    tracker.updated = True


def _random_states() -> Dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_random_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def _gathered(trainer: pl.Trainer, local: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``local`` from every process, in rank order (``[local]`` on one process)."""
    if trainer.world_size == 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [local]
    parts: List[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, local)
    return parts


def _is_resumable(loader: object) -> bool:
    return callable(getattr(loader, "state_dict", None)) and callable(getattr(loader, "load_state_dict", None))


class _ResumableCheckpoint(backup._BackupAndRestore):
    """``BackupAndRestore`` with a batch-exact resume (see :mod:`keras_bridge.callbacks.ports.resume`).

    Args:
        backup_dir: the folder for the backup files (deleted after a completed fit by default).
        save_freq: ``"epoch"`` or a number of batches between backups; a backup is also written at
            the end of every epoch. Defaults to ``"epoch"``.
        double_checkpoint: keep the previous backup as ``*.bkp`` files, used if the latest cannot be
            read. Defaults to ``False``.
        delete_checkpoint: delete ``backup_dir`` when fit completes. Defaults to ``True``.

    Raises:
        ValueError: (at the start of ``fit``) training data whose position cannot be saved (a
            ``DataLoader`` or an iterable: pass arrays, a torch ``Dataset`` or a PyDataset).
    """

    _kb_resumed_mid_epoch = False  # read by the driver after on_train_begin
    _kb_resumed_epoch: Optional[int] = None  # the epoch a restored backup continues (the driver cleans the logs)
    _pending: Optional[Dict[str, Any]] = None
    _restored: Optional[Dict[str, Any]] = None
    _loader_states: List[Any] = []
    _save_at_epoch_end = False

    # ---------------------------------------------------------------- restore
    def _kb_on_fit_start(self) -> None:
        """Load the backup before the fit loop starts (Lightning then continues its loop state)."""
        self._pending = self._restored = self._kb_resumed_epoch = None
        self._kb_resumed_mid_epoch = False
        self._restore_with_fallback(self._restore)

    def _restore(self) -> None:
        if not self._agreed(os.path.exists(self._weights_path)):
            return
        states, _ = saving.read_state_file(self._weights_path)
        if "resume" not in states:
            raise ValueError(
                f"{self._weights_path} was not written by ResumableCheckpoint (a BackupAndRestore backup?). "
                f"Resume it with BackupAndRestore, or delete {self.backup_dir}."
            )
        module, trainer, resume = self._kb_module, self._kb_trainer, states["resume"]
        self._own_part(resume)  # the same number of processes, before anything is restored
        _state.load_model_state(module, states["model"], self._weights_path)
        _state.apply_training_state(trainer, states, module)
        # Lightning hands loader states over only when it restarts inside an epoch: ours go at train begin.
        self._loader_states = load_fit_loop_state(trainer, resume["loop"])
        self._current_epoch, self._last_batch_seen = int(resume["epoch"]), int(resume["batch"])
        self._pending = resume
        kept = ("optimizer", "optimizer_by_position", "scheduler")
        self._restored = {key: states[key] for key in kept if key in states}
        self._kb_resumed_mid_epoch = not resume["finished"]
        self._kb_resumed_epoch = int(resume["epoch"])

    def _kb_reapply_training_state(self) -> None:
        """The restored optimizer and scheduler state again, after the callbacks saw the resumed epoch begin."""
        if self._restored:
            _state.apply_training_state(self._kb_trainer, self._restored, self._kb_module)
        self._kb_resumed_mid_epoch = False

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        loaders = self._kb_trainer.train_dataloader if self._kb_trainer is not None else None
        flat = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        stuck = [type(loader).__name__ for loader in flat if loader is not None and not _is_resumable(loader)]
        if stuck:
            raise ValueError(
                "ResumableCheckpoint resumes at the next batch of the training data, which needs data whose "
                "position can be saved: `x` as arrays, a torch Dataset or a keras.utils.PyDataset. Received: `x` "
                f"read through {', '.join(stuck)} (a DataLoader or an iterable of batches, whose order the bridge "
                "does not own). Use keras.callbacks.BackupAndRestore (epoch-granular) instead."
            )
        resume = self._pending
        if resume is None:
            return
        resumable = [loader for loader in flat if loader is not None]
        if len(resumable) != len(self._loader_states):
            raise ValueError(
                f"The backup in {self.backup_dir} holds the position of {len(self._loader_states)} training "
                f"loader(s); this fit has {len(resumable)}. Resume with the data of the interrupted run."
            )
        for loader, state in zip(resumable, self._loader_states):
            loader.load_state_dict(state)
        module = self._kb_module
        history = getattr(module, "history", None)
        if history is not None:
            history.history = {key: list(values) for key, values in resume["history"].items()}
        self._history_epochs: List[int] = list(resume["history_epoch"])
        own = self._own_part(resume)
        if not resume["finished"]:
            module.on_train_epoch_start()  # the interrupted epoch's fresh logs, then its running metrics
            _load_metric_states(module.train_tracker, own["metrics"])
        _set_random_states(own["rng"])

    def _own_part(self, resume: Mapping[str, Any]) -> Mapping[str, Any]:
        # Under DDP every process's running metrics and random states are its own: each takes its part.
        parts = resume.get("ranks")
        trainer = self._kb_trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if parts is None:
            parts = [resume]
        if len(parts) != world:
            raise ValueError(
                f"The backup in {self.backup_dir} was written by a fit on {len(parts)} process(es); this fit runs "
                f"on {world}. An exact resume needs the same number of processes: resume with {len(parts)}, or "
                f"delete {self.backup_dir} to start again."
            )
        return parts[rank]

    def _restore_history_epochs(self) -> None:
        # History.on_train_begin emptied its epoch list after ours ran; put the saved epochs in front.
        epochs = getattr(self, "_history_epochs", None)
        history = getattr(self._kb_module, "history", None)
        if epochs is not None and history is not None:
            history.epoch[:0] = epochs
        self._history_epochs = None  # type: ignore[assignment]

    # ---------------------------------------------------------------- backup
    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if not self._should_save_on_batch(batch):
            return
        if self._kb_trainer is not None and on_last_training_batch(self._kb_trainer):
            # Lightning restores a last-batch state as a finished epoch (no validation, no epoch end):
            # the epoch-end backup stands for it.
            self._save_at_epoch_end = True
            return
        self._save_model()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._restore_history_epochs()
        self._current_epoch, self._last_batch_seen = epoch + 1, 0
        self._save_at_epoch_end = False
        self._save_model(epoch_logs=dict(logs or {}), epoch=epoch)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._restore_history_epochs()
        super().on_train_end(logs)

    def _kb_save_for_preemption(self, at_epoch_end: bool) -> Optional[str]:
        """Save the exact position now (SIGTERM): every process calls this at the same boundary."""
        trainer = self._kb_trainer
        if trainer is None:
            return None
        if not at_epoch_end and not on_last_training_batch(trainer):
            self._save_model()  # at an epoch's end (or on its last batch) the epoch-end backup is the point
        return f"ResumableCheckpoint saved an exact resume point in {self.backup_dir}."

    def _save_model(self, epoch_logs: Optional[Dict[str, Any]] = None, epoch: Optional[int] = None) -> None:
        trainer, module = self._kb_trainer, self._kb_module
        if trainer is None or saving.saves_held(module, self._weights_path):
            return
        finished = epoch_logs is not None
        # Every process's own part (a collective under DDP: all processes save at the same boundaries).
        ranks = _gathered(trainer, {"metrics": {} if finished else _metric_states(module.train_tracker),
                                    "rng": _random_states()})  # fmt: skip
        if not self._kb_is_writer:
            return
        loop = fit_loop_state(trainer, next_epoch=finished)
        history = getattr(module, "history", None)
        recorded = {k: list(v) for k, v in (getattr(history, "history", None) or {}).items()}
        epochs = list(getattr(self, "_history_epochs", None) or []) + list(getattr(history, "epoch", None) or [])
        if finished:
            # History appends this epoch after us: save it as it will be.
            for key, value in epoch_logs.items():  # type: ignore[union-attr]
                recorded.setdefault(key, []).append(value)
            epochs.append(epoch)
        resume = {
            "epoch": self._current_epoch if finished else trainer.current_epoch,
            "batch": 0 if finished else self._last_batch_seen + 1,
            "finished": finished,
            "loop": loop,
            "history": recorded,
            "history_epoch": epochs,
            "metrics": ranks[0]["metrics"],
            "rng": ranks[0]["rng"],
        }
        if len(ranks) > 1:
            resume["ranks"] = ranks
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._weights_path):
            backup._copy(self._weights_path, self._prev_weights_path)
        metadata = {"epoch": resume["epoch"], "batch": resume["batch"]}
        saving.write_state_file(self._weights_path, module, metadata, trees={"resume": resume})
        with atomic_write(self._training_metadata_path) as tmp, open(tmp, "w") as f:
            f.write(json.dumps(metadata))


def __getattr__(name: str) -> Any:
    if name == "ResumableCheckpoint":
        return keras_subclass(name, _ResumableCheckpoint, "BackupAndRestore", __name__, base=backup.BackupAndRestore)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
