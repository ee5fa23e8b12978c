"""Keras's ``TensorBoard`` callback written with ``torch.utils.tensorboard`` (no TensorFlow needed).

Keras's callback imports ``tensorflow.summary`` and so cannot run on a torch-only install. This port
keeps its constructor, its counters and its rules, and writes the same event files:

* ``log_dir/train``: ``epoch_<key>`` for every non-``val_`` key plus ``epoch_learning_rate`` (and
  ``epoch_steps_per_second``), at step = epoch (0-based); ``batch_<key>`` every ``update_freq``
  global train batches (1-based counter) when ``update_freq`` is ``"batch"`` or an int; weight
  histograms ``<weight path>/histogram`` (and images) every ``histogram_freq`` epochs; the ``keras``
  model-config summary for Functional/Sequential models.
* ``log_dir/validation``: ``epoch_<key>`` for the ``val_`` keys with the prefix removed, and
  ``evaluation_<key>_vs_iterations`` at step = optimizer iterations at every test end.

Scalars are written as TF2 writes them (tensor summaries of the ``scalars`` plugin), so TensorBoard
and ``EventAccumulator`` read them as they read Keras's. Keras's quirk is kept: with an integer
``update_freq`` every summary is recorded only when the counter last pushed (train or test batch)
is a multiple of ``update_freq``. Only global rank 0 writes. ``profile_batch`` (unsupported by Keras
on torch) and ``embeddings_freq`` are rejected.

Example:
    >>> import keras_bridge as kb
    >>> tb = kb.callbacks.TensorBoard(log_dir="logs", update_freq="batch")
    >>> tb.update_freq
    1
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from keras_bridge.callbacks.ports.base import BoundPort, lazy_ports, stand_in
from keras_bridge.utils.compat import keras_profile_batches, tensorboard_file_writer

if TYPE_CHECKING:
    import keras

_TRAIN, _VAL = "train", "val"


class _TensorBoard(BoundPort):
    """Keras's ``TensorBoard`` on ``torch.utils.tensorboard`` (see :mod:`keras_bridge.callbacks.ports.tensorboard`).

    Args:
        log_dir: the folder holding ``train/`` and ``validation/``. Defaults to ``"logs"``.
        histogram_freq: write weight histograms every this many epochs (0: never). Defaults to ``0``.
        write_graph: write the Keras model config (Functional/Sequential models). Defaults to ``True``.
        write_images: also write weights as images with the histograms. Defaults to ``False``.
        write_steps_per_second: log ``steps_per_second``. Defaults to ``False``.
        update_freq: ``"epoch"``, ``"batch"`` or a number of batches between ``batch_*`` writes.
        profile_batch: must be ``0`` (profiling is not available on torch, as in Keras).
        embeddings_freq: must be ``0`` (not translated).
        embeddings_metadata: ignored when ``embeddings_freq`` is 0.
    """

    _kb_mirrored = ("_global_train_batch", "_global_test_batch", "_previous_epoch_iterations")

    def __init__(
        self,
        log_dir: Any = "logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: Any = "epoch",
        profile_batch: Any = 0,
        embeddings_freq: int = 0,
        embeddings_metadata: Any = None,
    ) -> None:
        if embeddings_freq:
            raise ValueError(
                "TensorBoard: the argument `embeddings_freq` cannot be translated (Keras's projector "
                f"checkpoints need TensorFlow). Received: embeddings_freq={embeddings_freq}. Pass embeddings_freq=0."
            )
        super().__init__(log_dir=log_dir, histogram_freq=histogram_freq, write_graph=write_graph,
                         write_images=write_images, write_steps_per_second=write_steps_per_second,
                         update_freq=update_freq, profile_batch=profile_batch)  # fmt: skip
        self._stack: List[Tuple[str, bool]] = []
        self._summary_pending = False

    # ---------------------------------------------------------------- run-time plumbing
    @property
    def _kb_batch_logs(self) -> bool:
        # Batch hooks matter only when something is written per batch.
        return self.update_freq != "epoch" or bool(self.write_steps_per_second)

    def set_model(self, model: keras.Model) -> None:
        self._model = model
        self._log_write_dir = self.log_dir
        self._train_dir = os.path.join(self._log_write_dir, "train")
        self._val_dir = os.path.join(self._log_write_dir, "validation")
        self._close_writers()
        self._writers: Dict[str, Any] = {}
        self._kb_start_epoch: Optional[int] = None
        self._stack = []
        # Keras writes the summary here; the rank is known only once the run starts.
        self._summary_pending = bool(self.write_graph)

    def _writer(self, which: str) -> Optional[Any]:
        if not self._kb_is_writer:
            return None
        if which not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = self._train_dir if which == _TRAIN else self._val_dir
            self._writers[which] = SummaryWriter(log_dir=log_dir, purge_step=self._kb_start_epoch)
        return self._writers[which]

    def _kb_mark_start(self, epoch: int) -> None:
        """Mark in the event files that this fit starts at ``epoch`` (TensorBoard's ``purge_step``).

        A run resumed after a kill (or a fit continuing an earlier one in the same folder) then shows
        every epoch once: TensorBoard drops the earlier events from that epoch on. Only for epoch-level
        steps (``update_freq="epoch"``), whose steps are epochs.
        """
        if self.update_freq != "epoch":
            return
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        self._kb_start_epoch = epoch
        for writer in self._writers.values():  # created before (the model summary): mark them now
            start = Event(step=epoch, session_log=SessionLog(status=SessionLog.START))
            tensorboard_file_writer(writer).add_event(start)

    def _close_writers(self) -> None:
        for writer in getattr(self, "_writers", {}).values():
            writer.close()

    # Keras pushes (writer, record_if(step % update_freq == 0)) around batches when update_freq is
    # not "epoch"; every summary obeys the innermost condition, whichever writer it names.
    def _push_writer(self, which: str, step: int) -> None:
        if self.update_freq != "epoch":
            self._stack.append((which, step % self.update_freq == 0))

    def _pop_writer(self) -> None:
        if self.update_freq != "epoch" and self._stack:
            self._stack.pop()

    def _recording(self) -> bool:
        return not self._stack or self._stack[-1][1]

    def _scalar(self, which: Optional[str], tag: str, value: Any, step: int) -> None:
        if which is None or not self._recording():
            return
        writer = self._writer(which)
        if writer is not None:
            writer.add_scalar(tag, float(value), int(step), new_style=True)

    def _default_writer(self) -> Optional[str]:
        return self._stack[-1][0] if self._stack else None

    # ---------------------------------------------------------------- hooks (Keras's order and counters)
    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._global_train_batch = 0
        self._previous_epoch_iterations = 0.0
        if self._summary_pending:
            self._write_model_summary()
        self._push_writer(_TRAIN, self._global_train_batch)

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._pop_writer()
        self._close_writers()
        self._writers = {}

    def on_test_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._push_writer(_VAL, self._global_test_batch)

    def on_test_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer and hasattr(optimizer, "iterations"):
            for name, value in (logs or {}).items():
                self._scalar(_VAL, f"evaluation_{name}_vs_iterations", value, optimizer.iterations)
        self._pop_writer()

    def on_train_batch_begin(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._global_train_batch += 1
        if self.update_freq != "epoch":
            self._pop_writer()
            self._push_writer(_TRAIN, self._global_train_batch)
        if self.write_steps_per_second:
            self._batch_start_time = time.time()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        which = self._default_writer()  # with update_freq="epoch" there is none: nothing is written
        if self.write_steps_per_second:
            rate = 1.0 / max(time.time() - self._batch_start_time, 1e-9)  # Keras divides by zero on fast steps
            self._scalar(which, "batch_steps_per_second", rate, self._global_train_batch)
        if isinstance(logs, dict):
            for name, value in logs.items():
                self._scalar(which, f"batch_{name}", value, self._global_train_batch)

    def on_test_batch_begin(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._global_test_batch += 1
        if self.update_freq != "epoch":
            self._pop_writer()
            self._push_writer(_VAL, self._global_test_batch)

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self.write_steps_per_second:
            self._previous_epoch_iterations = float(self.model.optimizer.iterations)
            self._epoch_start_time = time.time()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        self._log_epoch_metrics(epoch, logs)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        for writer in self._writers.values():  # a killed run loses at most the epoch in progress
            writer.flush()

    # ---------------------------------------------------------------- what is written
    def _log_epoch_metrics(self, epoch: int, logs: Optional[Mapping[str, Any]]) -> None:
        if not logs:
            return
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k: v for k, v in logs.items() if k.startswith("val_")}
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "learning_rate"):
            train_logs["learning_rate"] = float(optimizer.learning_rate)
        if self.write_steps_per_second and optimizer is not None:
            elapsed = np.float32(time.time() - self._epoch_start_time)
            train_logs["steps_per_second"] = float(
                (np.float32(optimizer.iterations) - np.float32(self._previous_epoch_iterations)) / elapsed
            )
        for name, value in train_logs.items():
            self._scalar(_TRAIN, f"epoch_{name}", value, epoch)
        for name, value in val_logs.items():
            self._scalar(_VAL, f"epoch_{name[4:]}", value, epoch)

    def _named_weights(self) -> List[Tuple[str, np.ndarray]]:
        if self._kb_module is not None and not self._kb_module.is_keras:
            # A torch module: state_dict names, with "/" as Keras's path separator.
            state = self._kb_module.model.state_dict()
            return [(name.replace(".", "/"), t.detach().cpu().numpy()) for name, t in state.items()]
        from keras_bridge.utils.keras import import_keras

        to_numpy = import_keras().ops.convert_to_numpy
        return [(w.path.replace(":", "_"), to_numpy(w)) for layer in self.model.layers for w in layer.weights]

    def _log_weights(self, epoch: int) -> None:
        writer = self._writer(_TRAIN)
        if not self._recording() or writer is None:
            return
        for name, value in self._named_weights():
            writer.add_histogram(f"{name}/histogram", value, epoch)
            if self.write_images:
                image = _weight_image(value)
                if image is not None:
                    writer.add_images(f"{name}/image", image, epoch, dataformats="NHWC")
        writer.flush()

    def _write_model_summary(self) -> None:
        self._summary_pending = False
        if type(self.model).__name__ not in ("Functional", "Sequential") or self._writer(_TRAIN) is None:
            return
        try:
            config = self.model.to_json()
        except Exception as exc:
            import warnings

            warnings.warn(f"Model failed to serialize as JSON. Ignoring... {exc}", stacklevel=2)
            return
        _write_text_tensor(self._writer(_TRAIN), "keras", config, "graph_keras_model", 0)


def _weight_image(w: np.ndarray) -> Optional[np.ndarray]:
    """Keras's ``_log_weight_as_image`` reshaping (channels-last), or None when Keras writes no image."""
    w = np.squeeze(w)
    if w.ndim == 1:
        w = w.reshape(1, w.shape[0], 1, 1)
    elif w.ndim == 2:
        if w.shape[0] > w.shape[1]:
            w = w.T
        w = w.reshape(1, w.shape[0], w.shape[1], 1)
    elif w.ndim == 3:
        w = np.transpose(w, (2, 0, 1))
        w = w.reshape(w.shape[0], w.shape[1], w.shape[2], 1)
    return w if w.ndim == 4 and w.shape[-1] in (1, 3, 4) else None


def _write_text_tensor(writer: Any, tag: str, text: str, plugin: str, step: int) -> None:
    """A string tensor summary with ``plugin`` metadata, as ``keras_model_summary`` writes it."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.types_pb2 import DT_STRING

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=plugin, content=b"1"))
    tensor = TensorProto(dtype=DT_STRING, string_val=[text.encode()])
    tensorboard_file_writer(writer).add_summary(
        Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)]), step
    )


def from_keras(callback: keras.callbacks.Callback) -> Any:
    """The port configured as a ``keras.callbacks.TensorBoard`` instance (which needs TensorFlow)."""
    port = __getattr__("TensorBoard")
    profile = keras_profile_batches(callback)
    return stand_in(port, callback, log_dir=callback.log_dir, histogram_freq=callback.histogram_freq,
                    write_graph=callback.write_graph, write_images=callback.write_images,
                    write_steps_per_second=callback.write_steps_per_second, update_freq=callback.update_freq,
                    profile_batch=0 if profile == (0, 0) else profile, embeddings_freq=callback.embeddings_freq,
                    embeddings_metadata=callback.embeddings_metadata)  # fmt: skip


__getattr__ = lazy_ports(__name__, {"TensorBoard": _TensorBoard})
