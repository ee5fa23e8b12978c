"""Helpers for error messages that tell the user how to fix the call."""

from __future__ import annotations

import difflib
from typing import Iterable


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
