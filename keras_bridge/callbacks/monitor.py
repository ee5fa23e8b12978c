"""Keras's ``mode="auto"`` for the bridge's compiled metrics.

Keras's ``MonitorCallback._set_monitor_op`` decides between ``ops.less`` and ``ops.greater`` from the
monitored name: ``loss`` (after removing ``val_``) means lower is better; otherwise it looks for a
compiled metric whose (unprefixed) ``name`` equals it and reads its ``_direction``. The Keras model
the bridge hands to callbacks was never compiled by Keras, so that search would find nothing. This
module runs the same search over the bridge's compiled metrics (their ``direction``, or a torchmetrics
metric's ``higher_is_better``) and sets ``monitor_op`` and the sign of ``min_delta`` exactly as Keras
would. When it finds nothing, the callback is left alone and Keras raises its own error at the first
epoch end, as it would in Keras (e.g. for multi-output keys such as ``val_cls_accuracy``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from keras_bridge.utils.compat import has_keras_monitor_op, set_keras_monitor_op
from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    import keras

    from keras_bridge.protocols import CallbackHost


def metric_direction(metric: keras.metrics.Metric) -> Optional[str]:
    """``"up"``, ``"down"`` or ``None`` for a compiled metric object.

    Example:
        >>> class M: higher_is_better = True
        >>> metric_direction(M())
        'up'
    """
    direction = getattr(metric, "direction", None) or getattr(metric, "_direction", None)
    if direction in ("up", "down"):
        return direction
    higher = getattr(metric, "higher_is_better", None)
    if higher is None:
        return None
    return "up" if higher else "down"


def auto_monitor_op(monitor: str, module: CallbackHost) -> Optional[Callable[..., Any]]:
    """The comparison Keras's ``mode="auto"`` would pick for ``monitor``, or ``None`` if it cannot tell.

    Args:
        monitor: the monitored logs key, e.g. ``"val_loss"`` or ``"val_sparse_categorical_accuracy"``.
        module: the :class:`~keras_bridge.KerasModule` (its compiled metrics are searched).
    """
    ops = import_keras().ops
    name = monitor.removeprefix("val_")
    op = ops.less if name == "loss" else None
    plan = getattr(module, "metric_plan", None)
    for entry in getattr(plan, "entries", None) or []:
        # Keras compares the metric's own (unprefixed) name, and the last match wins.
        if entry.base_name == name:
            direction = metric_direction(entry.metric)
            if direction is not None:
                op = ops.greater if direction == "up" else ops.less
    return op


def resolve_monitor_op(callback: keras.callbacks.Callback, module: CallbackHost) -> None:
    """Set ``callback.monitor_op`` before training, as Keras's lazy ``_set_monitor_op`` would later.

    Resolving up front also fixes a Keras 3.15 bug: an integer ``save_freq`` with ``save_best_only``
    compares with ``monitor_op`` before any epoch end has set it.
    """
    keras = import_keras()
    # Duck-typed: Keras's MonitorCallback (not exported) and any subclass define both.
    if not has_keras_monitor_op(callback) or getattr(callback, "monitor_op", 0) is not None:
        return
    if callback.mode in ("min", "max"):
        set_keras_monitor_op(callback)
        return
    op = auto_monitor_op(callback.monitor, module)
    if op is None:
        return  # Keras raises its own ValueError at the first epoch end
    callback.monitor_op = op
    if op is keras.ops.less:
        callback.min_delta *= -1


def check_monitored(callback: keras.callbacks.Callback, logs: Mapping[str, Any]) -> None:
    """Refuse a monitored key that is not in the epoch logs where Keras would fail on it anyway.

    Keras raises at the first epoch end when ``mode="auto"`` cannot tell the direction of an unknown
    key; when the key is simply not logged, that message misleads (it asks for ``mode``), so this one
    names the missing key and the keys that were logged. Where Keras only warns about a missing key
    (``mode`` given, or a ``*loss`` key), Keras's warning is left as it is.

    Raises:
        ValueError: ``callback`` monitors a key missing from ``logs`` and its direction is unresolved.

    Example:
        >>> import keras
        >>> cb = keras.callbacks.EarlyStopping(monitor="val_acc")
        >>> check_monitored(cb, {"loss": 0.1, "val_loss": 0.2})
        Traceback (most recent call last):
        ...
        ValueError: EarlyStopping reads 'val_acc' from the epoch logs, which do not hold it. Logged keys: 'loss', ...
    """
    if has_keras_monitor_op(callback) and getattr(callback, "monitor_op", 0) is None:
        check_logged(callback, callback.monitor, logs, "epoch")


def check_logged(callback: keras.callbacks.Callback, key: str, logs: Mapping[str, Any], when: str) -> None:
    """Refuse ``callback`` reading ``key`` from ``when`` (``"epoch"``/``"batch"``) logs that do not hold it.

    For a key Keras always logs and a callback silently skips when it is absent (``TerminateOnNaN``'s
    batch ``loss``), and for :func:`check_monitored`.

    Raises:
        ValueError: naming the callback, the missing key and the keys logged.
    """
    if key in logs:
        return
    logged = ", ".join(repr(k) for k in sorted(logs)) or "none"
    how = (
        f"`self.log({key!r}, value)` in training_step, per step (on_step=True)"
        if when == "batch"
        else f"`self.log({key!r}, value)`; validation values under Keras's 'val_' prefix; what a LightningModule "
        "logs in its own on_train_epoch_end comes after the Keras callbacks ran: log it in training_step with "
        "on_epoch=True"
    )
    raise ValueError(
        f"{type(callback).__name__} reads {key!r} from the {when} logs, which do not hold it. Logged keys: "
        f"{logged}. Have the callback read one of them, or, on a LightningModule of your own, log it: {how}."
    )
