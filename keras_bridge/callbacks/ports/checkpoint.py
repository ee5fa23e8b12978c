"""``ModelCheckpoint`` accepting the bridge's extra formats.

Keras's ``ModelCheckpoint`` is driven as is (its rules: 1-based ``{epoch}``/``{batch}``, any logs key
in the template, ``save_best_only``, ``save_freq`` in batches, ``initial_value_threshold``); the
saving itself goes through ``self.model.save``/``save_weights``, which the bridge makes atomic and
rank-0-only. Keras's constructor only accepts ``.keras``/``.h5`` (``.weights.h5`` with
``save_weights_only``); this subclass also accepts ``.ckpt`` (a Lightning checkpoint) and, with
``save_weights_only``, ``.weights.pt``.

Example:
    >>> import keras_bridge as kb
    >>> cb = kb.callbacks.ModelCheckpoint("ckpt/epoch{epoch:02d}.ckpt", save_best_only=True)
    >>> cb.filepath, cb.monitor
    ('ckpt/epoch{epoch:02d}.ckpt', 'val_loss')
"""

from __future__ import annotations

import os
from typing import Optional, Union

from keras_bridge.callbacks.ports.base import Port, lazy_ports

WEIGHTS_SUFFIXES = (".weights.h5", ".weights.pt", ".ckpt")
MODEL_SUFFIXES = (".keras", ".h5", ".ckpt")


class _ModelCheckpoint(Port):
    """Keras's ``ModelCheckpoint`` that also writes ``.ckpt`` and ``.weights.pt`` files.

    Args:
        filepath: a Keras template (``"m_{epoch:02d}_{val_loss:.3f}.keras"``). With
            ``save_weights_only`` it must end in ``.weights.h5``, ``.weights.pt`` or ``.ckpt``, otherwise
            in ``.keras``, ``.h5`` (Keras models) or ``.ckpt``.
        monitor: the logs key compared by ``save_best_only``. Defaults to ``"val_loss"``.
        verbose: 1 prints Keras's messages. Defaults to ``0``.
        save_best_only: save only when ``monitor`` improves. Defaults to ``False``.
        save_weights_only: save the weights only. Defaults to ``False``.
        mode: ``"auto"``, ``"min"`` or ``"max"``. Defaults to ``"auto"``.
        save_freq: ``"epoch"`` or a number of batches. Defaults to ``"epoch"``.
        initial_value_threshold: the initial ``best`` value. Defaults to ``None``.
    """

    def __init__(
        self,
        filepath: Union[str, os.PathLike],
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: Union[str, int] = "epoch",
        initial_value_threshold: Optional[float] = None,
    ) -> None:
        filepath = os.fspath(filepath)
        allowed = WEIGHTS_SUFFIXES if save_weights_only else MODEL_SUFFIXES
        if not filepath.endswith(allowed):
            kind = "With `save_weights_only=True` the" if save_weights_only else "The"
            raise ValueError(
                f"{kind} filepath of ModelCheckpoint must end in {', '.join(repr(s) for s in allowed)}. "
                f"Received: filepath={filepath}"
            )
        # Keras's constructor checks the extension against its own list: give it one it accepts,
        # then set the real template (the only attribute derived from `filepath`).
        placeholder = "placeholder" + (".weights.h5" if save_weights_only else ".keras")
        super().__init__(placeholder, monitor=monitor, verbose=verbose, save_best_only=save_best_only,
                         save_weights_only=save_weights_only, mode=mode, save_freq=save_freq,
                         initial_value_threshold=initial_value_threshold)  # fmt: skip
        self.filepath = filepath


__getattr__ = lazy_ports(__name__, {"ModelCheckpoint": _ModelCheckpoint})
