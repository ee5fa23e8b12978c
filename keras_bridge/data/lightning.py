"""Keras-style data for a plain ``lightning.Trainer``: :func:`to_dataloader`."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch.utils.data import DataLoader

from keras_bridge.data.contract import DataOptions
from keras_bridge.data.dispatch import make_loader
from keras_bridge.data.epoch_iterator import as_dataloader
from keras_bridge.typing import DataInput
from keras_bridge.utils.tree import unpack_x_y_sample_weight


def to_dataloader(data: DataInput, batch_size: Optional[int] = None, shuffle: Union[bool, str] = False) -> DataLoader:
    """Turn Keras-style data into a loader that a plain ``lightning.Trainer`` can iterate.

    ``data`` may be a ``keras.utils.PyDataset`` (its workers settings apply, ``on_epoch_end()`` runs
    after every epoch), a torch ``Dataset`` (batched by ``batch_size``, default 32), a ``DataLoader``,
    an iterable of batches, or arrays: ``x``, or a tuple ``(x, y)`` / ``(x, y, sample_weight)``.

    The result is a ``torch.utils.data.DataLoader`` (over :class:`~keras_bridge.data.epoch_iterator.KerasEpochs`)
    that keeps Keras's rules: batch order, ``on_epoch_end()``, the PyDataset's own workers. It shards itself under
    DDP, so it works with ``use_distributed_sampler`` True or False, and ``fit`` accepts it back as ``x``.

    Args:
        data: the data.
        batch_size: batch size for sample-centric data (arrays, torch ``Dataset``); ignored otherwise.
        shuffle: ``True`` reshuffles every epoch (samples of arrays/Datasets, batch order of a
            PyDataset); ``"batch"`` shuffles inside batches (arrays/Datasets).

    Returns:
        A ``DataLoader`` (sized when the number of batches is known).

    Example:
        >>> import numpy as np
        >>> loader = to_dataloader((np.zeros((10, 3)), np.ones(10)), batch_size=4)
        >>> type(loader).__name__, len(loader), [len(b[0]) for b in loader]
        ('DataLoader', 3, [4, 4, 2])
    """
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    # A tuple is unpacked as Keras unpacks a batch; a list (or dict) is a multi-input `x`.
    x, y, sw = unpack_x_y_sample_weight(data) if isinstance(data, tuple) else (data, None, None)
    loader = make_loader(x, y, sw, DataOptions(batch_size=batch_size, shuffle=shuffle, seed=seed))
    return as_dataloader(loader.as_keras_loader())
