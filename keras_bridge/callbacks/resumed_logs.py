r"""Logs that a resumed run appends to: what was logged for the epochs it trains again is dropped first.

A run killed after ``CSVLogger`` wrote the row of an epoch but before the backup of that epoch was
saved trains that epoch again once resumed, and would write its row twice; a kill in the middle of a
write leaves half a row. When a fit restores a backup (``BackupAndRestore``, Keras's or the port,
or ``ResumableCheckpoint``), :func:`drop_logged_epochs` cuts an appending ``CSVLogger``'s file back
to its header and the whole rows of the epochs before the resumed one. Every fit tells the
``TensorBoard`` port the epoch it starts at (:func:`mark_start`): its event files carry TensorBoard's
``purge_step`` mark, so readers drop the events a killed run wrote from that epoch on.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
    >>> _ = open(path, "w", newline="").write("epoch,loss\r\n0,1.0\r\n1,0.5\r\n2,0.4\r\n3,0.")
    >>> truncate_csv(path, ",", 2)  # bytes kept: the header and the rows of epochs 0 and 1
    26
    >>> open(path, newline="").read()
    'epoch,loss\r\n0,1.0\r\n1,0.5\r\n'
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from keras_bridge.callbacks.ports.base import Port
from keras_bridge.utils.keras import import_keras


def truncate_csv(path: str, separator: str, epoch: int) -> int:
    """Cut the CSV file at ``path`` after its header and its whole rows of epochs before ``epoch``.

    Returns:
        The number of bytes kept.
    """
    with open(path, "rb") as f:
        data = f.read()
    keep, header = 0, True
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a row (or header) cut short by a kill
        if not header:
            try:
                if int(float(line.decode().split(separator, 1)[0])) >= epoch:
                    break
            except ValueError:
                break
        header = False
        keep += len(line)
    if keep < len(data):
        os.truncate(path, keep)
    return keep


def drop_logged_epochs(callbacks: Sequence[Any], epoch: int) -> None:
    """Make the logging callbacks of a fit that resumed at ``epoch`` log every epoch once (see the module doc)."""
    keras = import_keras()
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.CSVLogger) and cb.append and os.path.exists(cb.filename):
            handle = getattr(cb, "csv_file", None)
            if handle is not None and not handle.closed:
                handle.flush()  # opened for appending: writes go to the end, wherever it is after the cut
            if truncate_csv(cb.filename, cb.sep, epoch) == 0:
                cb.append_header = True


def mark_start(callbacks: Sequence[Any], epoch: int) -> None:
    """Tell the ports the epoch this fit starts at (see :meth:`~keras_bridge.callbacks.TensorBoard`)."""
    for cb in callbacks:
        if isinstance(cb, Port):
            cb._kb_mark_start(epoch)
