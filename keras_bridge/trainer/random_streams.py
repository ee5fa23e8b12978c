"""The global random streams of a run start where the caller left them, on every process.

Keras's ``fit`` never reseeds: its shuffles, an unseeded ``Dropout``'s masks and the states left after
the call continue the caller's streams. Lightning's distributed strategies (``ddp``, ``ddp_spawn``,
FSDP, DeepSpeed) reseed Python's, NumPy's and torch's global generators when they set up the process
group, if ``seed_everything`` was ever called in the process (its seed is kept in the environment and
inherited by child processes, so an earlier ``LightningCLI`` or ``seed_everything`` is enough). A
1-process run is not reseeded: the same script would then draw another shuffle (and other masks) on 2
processes than on 1. :class:`KeepRandomStreams` puts the streams back as they were when the call
started, right after that setup and before anything draws.

Example:
    >>> import random
    >>> states = capture_states(); first = random.random()
    >>> restore_states(states); random.random() == first
    True
"""

from __future__ import annotations

import random
from typing import Any, Dict

import lightning.pytorch as pl
import numpy as np
import torch


def capture_states() -> Dict[str, Any]:
    """Python's, NumPy's and torch's global random states (CUDA's too, once CUDA is in use)."""
    states: Dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_states(states: Dict[str, Any]) -> None:
    """Set the global random states taken by :func:`capture_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


class KeepRandomStreams(pl.Callback):
    """Undoes the reseeding of a strategy's setup: the run draws from the streams as the call found them.

    :meth:`capture` is called when the call starts (before Lightning launches or sets up anything);
    :meth:`setup` runs right after the strategy's setup, on every process. A ``ddp_spawn`` worker gets
    this callback, and so the launching process's states, with the Trainer.
    """

    def __init__(self) -> None:
        self._states: Dict[str, Any] = {}

    def capture(self) -> None:
        self._states = capture_states()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._states:
            restore_states(self._states)
        self._states = {}
