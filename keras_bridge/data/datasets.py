"""Dataset objects as ``fit``/``evaluate``/``predict`` input: which loader each kind becomes.

=====================================  ===============================================================
input                                  loader
=====================================  ===============================================================
``keras.utils.PyDataset``              :class:`~keras_bridge.data.pydataset.PyDatasetLoader`
``torch.utils.data.DataLoader``        :class:`~keras_bridge.data.torch_data.DataLoaderLoader` (as given)
map-style ``torch.utils.data.Dataset`` batched by ``batch_size`` (:func:`~keras_bridge.data.torch_data.sample_loader`)
``torch.utils.data.IterableDataset``   a ``DataLoader(dataset, batch_size)`` used as given
any other iterable of batches          :class:`~keras_bridge.data.loader.IterableLoader`
=====================================  ===============================================================
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import torch
from torch.utils.data import DataLoader, IterableDataset

from keras_bridge.data.arrays import GlobalBatchSampler, is_array_structure
from keras_bridge.data.loader import IterableLoader, KerasLoader
from keras_bridge.data.pydataset import PyDatasetLoader, is_py_dataset
from keras_bridge.data.torch_data import DEFAULT_BATCH_SIZE, DataLoaderLoader, SampleLoader, is_map_dataset, sample_loader


def _refuse_y(y: Any, sample_weight: Any, x: Any) -> None:
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(
                f"`{name}` must not be given when `x` is a dataset ({type(x).__name__}): the dataset "
                f"itself must yield `(x, y)` or `(x, y, sample_weight)` batches. Received: {name} of "
                f"type {type(value).__name__}"
            )


def make_loader(
    data: Any,
    batch_size: Optional[int] = None,
    shuffle: Any = False,
    class_weight: Any = None,
    steps_per_epoch: Optional[int] = None,
    seed: int = 0,
    evaluation: bool = False,
) -> Any:
    """The loader for one dataset object (see the module table); a ``KerasLoader`` or one of our DataLoaders.

    Raises:
        TypeError: ``data`` is none of the supported kinds.
    """
    if isinstance(data, KerasLoader):
        return data
    if isinstance(data, DataLoader) and isinstance(data.sampler, GlobalBatchSampler):
        return data  # built by the bridge already
    if is_py_dataset(data):
        if data.num_batches is None and shuffle:
            warnings.warn(
                "`shuffle=True` was passed, but will be ignored since the data `x` was provided as an "
                "infinite PyDataset. The PyDataset is expected to already be shuffled.",
                stacklevel=3,
            )
            shuffle = False
        return PyDatasetLoader(data, shuffle, class_weight, steps_per_epoch, seed, evaluation)
    if isinstance(data, DataLoader):
        return DataLoaderLoader(data, steps_per_epoch, class_weight, seed, evaluation)
    if is_map_dataset(data):
        # steps apply per evaluate() call (the engine limits them), never carried over.
        steps = None if evaluation else steps_per_epoch
        return sample_loader(data, batch_size, shuffle, seed, steps, class_weight)
    if isinstance(data, IterableDataset):
        loader = DataLoader(data, batch_size=batch_size or DEFAULT_BATCH_SIZE)
        return DataLoaderLoader(loader, steps_per_epoch, class_weight, seed, evaluation)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        return IterableLoader(data, steps_per_epoch, class_weight, evaluation)
    raise TypeError(
        "Expected `x` to be arrays (NumPy, torch, or lists/dicts of them), a keras.utils.PyDataset, a "
        "torch Dataset or DataLoader, or an iterable of batches. Received: x of type "
        f"{type(data).__name__}"
    )


def to_dataloader(data: Any, batch_size: Optional[int] = None, shuffle: Any = False) -> KerasLoader:
    """Turn Keras-style data into a loader that a plain ``lightning.Trainer`` can iterate.

    ``data`` may be a ``keras.utils.PyDataset`` (its workers settings apply, ``on_epoch_end()`` runs
    after every epoch), a torch ``Dataset`` (batched by ``batch_size``, default 32), a ``DataLoader``,
    an iterable of batches, or arrays: ``x``, or a tuple ``(x, y)`` / ``(x, y, sample_weight)``.

    The result shards itself under DDP, so it works with ``use_distributed_sampler`` True or False.

    Args:
        data: the data.
        batch_size: batch size for sample-centric data (arrays, torch ``Dataset``); ignored otherwise.
        shuffle: ``True`` reshuffles every epoch (samples of arrays/Datasets, batch order of a
            PyDataset); ``"batch"`` shuffles inside batches (arrays/Datasets).

    Returns:
        A :class:`~keras_bridge.data.loader.KerasLoader` (iterable, sized when the length is known).

    Example:
        >>> import numpy as np
        >>> loader = to_dataloader((np.zeros((10, 3)), np.ones(10)), batch_size=4)
        >>> len(loader), [len(b[0]) for b in loader]
        (3, [4, 4, 2])
    """
    from keras_bridge.data.arrays import array_loader, check_batch_size, check_cardinality, to_tensors

    check_batch_size(batch_size)
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    if is_array_structure(data):
        x, y, sw = _split_tuple(data)
        x, y, sw = to_tensors(x), to_tensors(y), to_tensors(sw)
        check_cardinality(x, y, sw)
        return SampleLoader(array_loader(x, y, sw, batch_size or DEFAULT_BATCH_SIZE, shuffle, seed))
    loader = make_loader(data, batch_size, shuffle, None, None, seed)
    return SampleLoader(loader) if isinstance(loader, DataLoader) else loader


def _split_tuple(data: Any) -> Tuple[Any, Any, Any]:
    # A tuple is unpacked the way Keras unpacks dataset elements; a list or dict is a multi-input x.
    if isinstance(data, tuple) and len(data) in (2, 3):
        return data[0], data[1], data[2] if len(data) == 3 else None
    if isinstance(data, tuple) and len(data) == 1:
        return data[0], None, None
    return data, None, None


def dataset_fit_loaders(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], shuffle: Any,
                        class_weight: Any, validation_split: float, validation_data: Any,
                        steps_per_epoch: Optional[int], seed: int) -> Tuple[Any, Optional[Any]]:
    """``(train_loader, val_loader_or_None)`` for a dataset ``x``."""
    _refuse_y(y, sample_weight, x)
    if validation_split:
        raise ValueError(
            "`validation_split` is only supported for arrays and tensors, not for a dataset "
            f"(x of type {type(x).__name__}). Pass `validation_data=` instead. Received: "
            f"validation_split={validation_split}"
        )
    if class_weight is not None and not isinstance(class_weight, dict):
        raise ValueError(
            "Expected `class_weight` to be a dict mapping class indices to weights. "
            f"Received: class_weight={class_weight!r}"
        )
    train = make_loader(x, batch_size, shuffle, class_weight, steps_per_epoch, seed)
    if isinstance(train, KerasLoader):
        train.reset()  # Keras calls on_epoch_end() once when fit() starts
    val = None
    if validation_data is not None:
        from keras_bridge.data.adapter import _unpack_validation, eval_loader

        val = eval_loader(*_unpack_validation(validation_data), batch_size=batch_size)
    return train, val


def dataset_eval_loader(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], steps: Optional[int]) -> Any:
    """The loader for ``evaluate``/``predict``/validation on a dataset ``x`` (never shuffled)."""
    _refuse_y(y, sample_weight, x)
    return make_loader(x, batch_size, False, None, steps, 0, evaluation=True)
