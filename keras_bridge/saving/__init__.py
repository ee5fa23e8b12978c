"""Files: atomic writes, the ``.keras`` archive, weights and checkpoint formats, training-state files.

:func:`keras_bridge.load_model` (in :mod:`keras_bridge.saving.api`) reads a ``.keras`` file back into a
module; the modules re-exported here only read and write files and never build a module.
"""

from keras_bridge.saving.atomic import atomic_write
from keras_bridge.saving.formats import load_weights, save_model, save_weights

__all__ = ["atomic_write", "load_weights", "save_model", "save_weights"]
