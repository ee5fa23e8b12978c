"""The one table of the Keras callbacks the bridge treats specially: its ports and the rank-0-only ones.

One :class:`CallbackRow` per callback: the name it is known by (in ``keras_bridge.callbacks`` and in
configs), the module of its port (``None``: Keras's own class runs unchanged), the ``keras.callbacks``
class it stands for, whether a Keras object of that class passed to ``fit`` is replaced by the port
automatically, and whether it runs on global rank 0 only under DDP (its only effect is files or output).
Adding a port is adding a row here and a module under ``keras_bridge/callbacks/ports/``.

Example:
    >>> [row.name for row in PORTS]
    ['TensorBoard', 'BackupAndRestore', 'ModelCheckpoint', 'ResumableCheckpoint']
    >>> ROWS["TensorBoard"].rank_zero_only, ROWS["TensorBoard"].translated
    (True, True)
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, NamedTuple, Optional, Tuple

__all__ = ["PORTS", "RANK_ZERO_ONLY", "ROWS", "TABLE", "TRANSLATED", "CallbackRow", "port_class", "port_module"]


class CallbackRow(NamedTuple):
    """One callback the bridge treats specially (see the module doc).

    Attributes:
        name: the class name, in ``keras_bridge.callbacks`` (a port) or ``keras.callbacks``.
        module: the port's module under ``keras_bridge.callbacks.ports``, or ``None`` (no port).
        keras_class: the ``keras.callbacks`` class it stands for, or ``None`` for a callback of the
            bridge's own built on another port (``ResumableCheckpoint`` extends the ``BackupAndRestore`` port).
        translated: a Keras object of exactly ``keras_class`` given to ``fit`` is replaced by the port.
        rank_zero_only: under DDP it runs on global rank 0 only.
    """

    name: str
    module: Optional[str]
    keras_class: Optional[str]
    translated: bool
    rank_zero_only: bool


TABLE: Tuple[CallbackRow, ...] = (
    # A Keras object is translated where Keras's code cannot run here: TensorBoard needs TensorFlow,
    # BackupAndRestore must restore the torch optimizer and the Lightning loop.
    CallbackRow("TensorBoard", "tensorboard", "TensorBoard", translated=True, rank_zero_only=True),
    CallbackRow("BackupAndRestore", "backup", "BackupAndRestore", translated=True, rank_zero_only=False),
    CallbackRow("ModelCheckpoint", "checkpoint", "ModelCheckpoint", translated=False, rank_zero_only=True),
    CallbackRow("ResumableCheckpoint", "resume", None, translated=False, rank_zero_only=False),
    CallbackRow("CSVLogger", None, "CSVLogger", translated=False, rank_zero_only=True),
    CallbackRow("RemoteMonitor", None, "RemoteMonitor", translated=False, rank_zero_only=True),
    CallbackRow("ProgbarLogger", None, "ProgbarLogger", translated=False, rank_zero_only=True),
)

ROWS: Dict[str, CallbackRow] = {row.name: row for row in TABLE}
PORTS: Tuple[CallbackRow, ...] = tuple(row for row in TABLE if row.module is not None)
TRANSLATED: Tuple[CallbackRow, ...] = tuple(row for row in PORTS if row.translated)
RANK_ZERO_ONLY: Tuple[str, ...] = tuple(row.keras_class for row in TABLE if row.rank_zero_only and row.keras_class)


def port_module(name: str) -> Any:
    """The module holding the port ``name`` (imported on first use; it does not import keras)."""
    module = ROWS[name].module
    if module is None:
        raise KeyError(f"{name} has no port")
    return importlib.import_module(f"keras_bridge.callbacks.ports.{module}")


def port_class(name: str) -> type:
    """The port class ``name`` (its Keras subclass is built on first use, importing keras)."""
    return getattr(port_module(name), name)
