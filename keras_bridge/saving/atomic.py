"""Atomic file writes and the rule that only one process writes.

Every file is written to a temporary file in the target's folder and moved over the target with
``os.replace``, so a process killed during a save leaves the previous file (or none), never a
truncated one. Under DDP only global rank 0 writes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator

from keras_bridge.utils.compat import attached_trainer

SUFFIXES = (".weights.h5", ".weights.pt", ".keras", ".ckpt", ".h5")


def file_suffix(path: str) -> str:
    """The format-defining suffix of ``path`` (``".weights.h5"`` before ``".h5"``), or ``""``."""
    return next((s for s in SUFFIXES if str(path).endswith(s)), "")


@contextlib.contextmanager
def atomic_write(path: str) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` with ``os.replace``.

    The temporary file is in the same folder (so the rename is atomic) and keeps the suffix (so Keras
    picks the same format). On any error it is removed and ``path`` is left as it was.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> with atomic_write(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read()
        'done'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = file_suffix(path) or os.path.splitext(path)[1]
    stem = os.path.basename(path)[: len(os.path.basename(path)) - len(suffix)]
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # the data must be on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def is_writer(module: Any) -> bool:
    """True unless ``module`` runs under a Trainer on a process other than global rank 0."""
    trainer = attached_trainer(module)
    return trainer is None or bool(trainer.is_global_zero)
