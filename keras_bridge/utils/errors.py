"""Helpers for error messages that tell the user how to fix the call."""

from __future__ import annotations

import difflib
import os
from types import TracebackType
from typing import Iterable, Optional


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A `` Did you mean 'x'?`` hint for a misspelt identifier, or an empty string.

    Example:
        >>> did_you_mean("acuracy", ["accuracy", "mae"])
        " Did you mean 'accuracy'?"
    """
    options = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(options), n=1, cutoff=0.75)
    return f" Did you mean {options[close[0]]!r}?" if close else ""


class NotCompiledError(ValueError):
    """``fit``/``evaluate`` (or training) before ``compile()``: a ValueError, as Keras raises."""


class LabelRangeError(ValueError):
    """A sparse label outside ``[0, classes)``: names the value, the number of classes and where it is.

    Raised by the bridge's sparse crossentropy; ``fit``/``evaluate`` add the batch (:meth:`in_batch`).

    Example:
        >>> err = LabelRangeError(12, 10, sample=3, loss="sparse_categorical_crossentropy")
        >>> print(err.in_batch("batch 4 of epoch 2"))
        Received a label value of 12 in `y` (sample 3 of batch 4 of epoch 2), but the model outputs 10 classes, ...
    """

    def __init__(self, label: int, classes: int, sample: int, loss: str = "sparse categorical crossentropy") -> None:
        self.label, self.classes, self.sample, self.loss = int(label), int(classes), int(sample), loss
        super().__init__(self._message(f"sample {self.sample} of the batch"))

    def _message(self, where: str) -> str:
        return (
            f"Received a label value of {self.label} in `y` ({where}), but the model outputs {self.classes} "
            f"classes, so {self.loss} accepts labels in [0, {self.classes - 1}]."
        )

    def in_batch(self, batch: str) -> LabelRangeError:
        """This error with its message naming ``batch`` (e.g. ``"batch 4 of epoch 2"``)."""
        self.args = (self._message(f"sample {self.sample} of {batch}"),)
        return self


_LIBRARIES = ("keras_bridge", "lightning", "lightning_fabric", "pytorch_lightning", "torch", "torchmetrics", "keras")


def _is_library(filename: str) -> bool:
    """True for a file of Python itself or of a library the bridge runs on (not of the user's code)."""
    import importlib.util
    import sysconfig

    paths = sysconfig.get_paths()
    installed = tuple(os.path.join(os.path.abspath(paths[k]), "") for k in ("purelib", "platlib"))
    if filename.startswith(os.path.join(os.path.abspath(paths["stdlib"]), "")) and not filename.startswith(installed):
        return True
    for name in _LIBRARIES:
        spec = importlib.util.find_spec(name)
        folders = spec.submodule_search_locations if spec is not None else None
        if folders and filename.startswith(tuple(os.path.join(os.path.abspath(f), "") for f in folders)):
            return True
    return False


def user_traceback(tb: Optional[TracebackType]) -> Optional[TracebackType]:
    """``tb`` from its outermost frame outside the libraries the bridge runs on, or ``tb`` itself.

    An error raised in a user's loss, metric or callback then shows the user's frames (and what they
    called) directly under the call of ``fit``, without the Lightning and bridge frames in between.
    Nothing is cut when no frame is the user's (an error inside the libraries keeps its whole story),
    nor when Keras's traceback filtering is off (``keras.config.disable_traceback_filtering()``).
    """
    if tb is None or not _traceback_filtering_enabled():
        return tb
    entry: Optional[TracebackType] = tb
    while entry is not None:
        filename = entry.tb_frame.f_code.co_filename
        if not filename.startswith("<frozen") and not _is_library(os.path.abspath(filename)):
            return entry
        entry = entry.tb_next
    return tb


def _traceback_filtering_enabled() -> bool:
    import sys

    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    check = getattr(config, "is_traceback_filtering_enabled", None)
    return bool(check()) if callable(check) else True
