"""Keras's progress output, drawn by Keras's own ``ProgbarLogger``/``Progbar``.

The only change: logs are handed over lazily. Keras computes every metric at every batch and then
the bar throttles drawing to one update per 0.05 s; we ask for the running means only when the bar
is about to draw, so there is no per-step host synchronisation on the training path.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from keras_bridge.utils.compat import init_keras_progbar, progbar_due
from keras_bridge.utils.keras import import_keras

LogsFn = Callable[[], Dict[str, float]]


def make_progbar_logger() -> Any:
    """Return a Keras ``ProgbarLogger`` subclass instance that accepts lazy logs."""
    keras = import_keras()

    class LazyProgbarLogger(keras.callbacks.ProgbarLogger):  # type: ignore[name-defined]
        """``keras.callbacks.ProgbarLogger`` that pulls batch logs only when it draws."""

        def update_lazily(self, batch: int, logs_fn: Optional[LogsFn]) -> None:
            init_keras_progbar(self)
            self.seen = batch + 1
            if self.verbose != 1:
                return
            bar = self.progbar
            due = progbar_due(bar)
            values = list(logs_fn().items()) if (due and logs_fn is not None) else None
            bar.update(self.seen, values, finalize=False)

        def __reduce__(self) -> Any:
            # A class made in a function does not pickle by name; ddp_spawn pickles the Trainer's callbacks.
            return (make_progbar_logger, (), dict(self.__dict__))

    return LazyProgbarLogger()
