"""Ray Train reports from a Keras ``fit``: every epoch's scalar logs under Keras's names, and a checkpoint.

Ray's own ``RayTrainReportCallback`` (a Lightning callback) reads ``trainer.callback_metrics`` before the
epoch's training metrics are final (Lightning runs plain callbacks before the module's epoch end), so
its train numbers lag one epoch behind the History. :func:`ray_report` is a Keras callback: it reports
the same logs the History records, on every worker (Ray expects every worker to report), and attaches
a ``model.keras`` written by worker 0 that ``kb.load_model`` reads.
"""

from __future__ import annotations

import numbers
import os
import tempfile
from typing import Any, Dict, Mapping, Optional

from keras_bridge.utils.keras import import_keras


def scalar_logs(logs: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """The scalar entries of a Keras logs dict as floats (what Ray's report accepts).

    Example:
        >>> scalar_logs({"loss": 0.5, "acc": 1, "confusion": [[1, 0], [0, 1]]})
        {'loss': 0.5, 'acc': 1.0}
    """
    out: Dict[str, float] = {}
    for key, value in (logs or {}).items():
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            out[key] = float(value)  # type: ignore[arg-type]
        elif getattr(value, "ndim", None) == 0 or getattr(value, "shape", None) == ():
            out[key] = float(value)
    return out


def ray_report(checkpoint: bool = True, filename: str = "model.keras") -> Any:
    """A Keras callback reporting each epoch to Ray Train (``ray.train.report``), for ``fit(callbacks=[...])``.

    Args:
        checkpoint: attach a checkpoint directory holding ``filename`` (saved by worker 0 with
            ``model.save``; ``kb.load_model(os.path.join(ckpt.path, filename))`` reads it).
        filename: the checkpoint file's name (``.keras``; ``.ckpt`` also works).

    Use it in a Ray ``train_func`` with a Trainer built as Ray documents it (``RayDDPStrategy``,
    ``RayLightningEnvironment``, ``prepare_trainer``) in place of ``RayTrainReportCallback``.
    """
    keras = import_keras()

    class RayTrainReport(keras.callbacks.Callback):  # type: ignore[name-defined]
        """Reports the epoch logs (and a checkpoint) to Ray Train."""

        def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, Any]] = None) -> None:
            import ray.train

            metrics = {**scalar_logs(logs), "epoch": epoch}
            if not checkpoint:
                ray.train.report(metrics)
                return
            with tempfile.TemporaryDirectory() as directory:
                ckpt = None
                if ray.train.get_context().get_world_rank() == 0:
                    self.model.save(os.path.join(directory, filename))
                    ckpt = ray.train.Checkpoint.from_directory(directory)
                ray.train.report(metrics, checkpoint=ckpt)

    return RayTrainReport()
