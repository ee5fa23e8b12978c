"""The types of the data the bridge passes around, named once.

Keras takes data of many kinds (arrays of any framework, pandas, nested lists and dicts of them,
datasets and generators) and the bridge's signatures say which: an array is anything NumPy can read
(:class:`SupportsArray`) or a torch tensor, a structure nests them in lists, tuples and dicts, and a
model's data (``x``, ``y``, ``sample_weight``, ``validation_data``) is a structure of arrays or a
dataset. This module imports nothing of the bridge's, so every module may use it.

Example:
    >>> import numpy as np
    >>> isinstance(np.zeros(2), SupportsArray), isinstance(iter([]), SupportsArray)
    (True, False)
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Protocol, Sequence, SupportsFloat, Union, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["ArrayLike", "ArrayTree", "DataInput", "LearningRate", "PathLike", "Schedule", "SupportsArray", "TensorTree"]


@runtime_checkable
class SupportsArray(Protocol):
    """Anything NumPy can read as an array (``__array__``): NumPy arrays and scalars, pandas ``DataFrame`` /
    ``Series``, JAX arrays, TensorFlow tensors.
    """

    def __array__(self) -> np.ndarray: ...


#: One array: a torch tensor, anything with ``__array__``, or a Python number.
ArrayLike = Union[torch.Tensor, SupportsArray, bool, int, float]

#: Arrays nested in lists, tuples and dicts as Keras takes ``x`` / ``y`` / ``sample_weight`` (``None`` for an
#: absent entry).
ArrayTree = Union[ArrayLike, None, Sequence["ArrayTree"], Mapping[str, "ArrayTree"]]

#: Torch tensors nested in lists, tuples and dicts: a batch, or a model's outputs, once converted.
TensorTree = Union[torch.Tensor, None, Sequence["TensorTree"], Mapping[str, "TensorTree"]]

#: What ``fit`` / ``evaluate`` / ``predict`` take as data: arrays, or a dataset (a torch ``Dataset`` or
#: ``DataLoader``, a Keras ``PyDataset``, a ``tf.data.Dataset``, a generator or any iterable of batches).
DataInput = Union[ArrayTree, Dataset[object], Iterable[object]]

#: A learning-rate schedule: a Keras ``LearningRateSchedule`` or any callable ``step -> lr``.
Schedule = Callable[[int], SupportsFloat]

#: An optimizer's ``learning_rate``: a number or a :data:`Schedule`.
LearningRate = Union[float, Schedule]

#: A file path, as ``open`` takes it.
PathLike = Union[str, "os.PathLike[str]"]
