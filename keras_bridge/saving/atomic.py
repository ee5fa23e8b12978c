"""Atomic file writes and the rule that only one process writes.

Every file is written to a temporary file in the target's folder and moved over the target with
``os.replace``, so a process killed during a save leaves the previous file (or none), never a
truncated one. Under DDP only global rank 0 writes.

A process killed during a save leaves its temporary file behind: its name carries the host and the
process id (``.model.<host>-<pid>.<random>.tmp.keras``), and the next save to the same target removes the
ones whose process is gone (on this host; from another host, once a day old).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from typing import TYPE_CHECKING, Iterator

from keras_bridge.utils.compat import attached_trainer

if TYPE_CHECKING:
    from keras_bridge.protocols import CallbackHost

SUFFIXES = (".weights.h5", ".weights.pt", ".keras", ".ckpt", ".h5")
# A temporary file from another host is only known dead by its age (its process cannot be asked).
_FOREIGN_STALE_AFTER_S = 24 * 3600


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
    remove_stale_temporaries(folder, stem, suffix)
    owner = f"{_host()}-{os.getpid()}"
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.{owner}.", suffix=f".tmp{suffix}", dir=folder)
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


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temporaries(folder: str, stem: str, suffix: str) -> None:
    """Delete the temporary files that killed saves of ``folder/<stem><suffix>`` left behind.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> stale = os.path.join(folder, f".m.{_host()}-999999999.x.tmp.keras")
        >>> _ = open(stale, "w").write("half a file")
        >>> remove_stale_temporaries(folder, "m", ".keras")
        >>> os.path.exists(stale)
        False
    """
    prefix, end = f".{stem}.", f".tmp{suffix}"
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix) and n.endswith(end)]
    except OSError:
        return
    for name in names:
        owner = name[len(prefix) :].split(".", 1)[0]
        host, _, pid = owner.rpartition("-")
        full = os.path.join(folder, name)
        if not pid.isdigit():
            continue  # not one of ours
        try:
            if host == _host():
                stale = not _alive(int(pid))
            else:
                stale = time.time() - os.path.getmtime(full) > _FOREIGN_STALE_AFTER_S
            if stale:
                os.remove(full)
        except OSError:
            pass  # removed meanwhile, or not ours to remove


def is_writer(module: CallbackHost) -> bool:
    """True unless ``module`` runs under a Trainer on a process other than global rank 0."""
    trainer = attached_trainer(module)
    return trainer is None or bool(trainer.is_global_zero)
