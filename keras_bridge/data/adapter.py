"""Turn Keras ``fit``/``evaluate``/``predict`` data arguments into DataLoaders.

Arrays (NumPy, torch, and lists/dicts of them) are batched here with Keras's rules; dataset objects
(PyDataset, torch Dataset/DataLoader, iterables of batches) go through :mod:`keras_bridge.data.datasets`.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from keras_bridge.data.arrays import (
    GlobalBatchSampler,
    array_loader,
    check_batch_size,
    check_cardinality,
    class_weight_to_sample_weight,
    is_array_structure,
    to_tensors,
    train_validation_split,
    unshard_global_batches,
)

DEFAULT_BATCH_SIZE = 32


def _check_class_weight(class_weight: Any, sample_weight: Any, y: Any) -> None:
    if class_weight is None:
        return
    if not isinstance(class_weight, dict):
        raise ValueError(
            "Expected `class_weight` to be a dict mapping class indices to weights. "
            f"Received: class_weight={class_weight!r}"
        )
    if sample_weight is not None:
        raise ValueError(
            "You cannot pass both `class_weight` and `sample_weight` to `fit()`: fold the class "
            "weights into `sample_weight`."
        )
    if isinstance(y, (list, tuple, dict)) and len(y) != 1:
        raise ValueError(
            "`class_weight` is only supported for models with a single output, but `y` holds "
            f"{len(y)} targets. Received: class_weight={class_weight!r}. Use per-output "
            "`sample_weight` instead."
        )


def _single(y: Any) -> Any:
    if isinstance(y, (list, tuple)):
        return y[0]
    if isinstance(y, dict):
        return next(iter(y.values()))
    return y


def fit_loaders(
    x: Any,
    y: Any = None,
    sample_weight: Any = None,
    batch_size: Optional[int] = None,
    shuffle: Any = True,
    class_weight: Any = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    steps_per_epoch: Optional[int] = None,
    seed: int = 0,
) -> Tuple[Any, Optional[Any]]:
    """Return ``(train_loader, val_loader_or_None)`` for ``fit``."""
    check_batch_size(batch_size)
    if not is_array_structure(x):
        from keras_bridge.data.datasets import dataset_fit_loaders

        return dataset_fit_loaders(
            x, y, sample_weight, batch_size, shuffle, class_weight, validation_split,
            validation_data, steps_per_epoch, seed,
        )
    _check_class_weight(class_weight, sample_weight, y)
    x, y, sample_weight = to_tensors(x), to_tensors(y), to_tensors(sample_weight)
    n = check_cardinality(x, y, sample_weight)
    val_arrays = None
    if validation_data is None and validation_split:
        (x, y, sample_weight), val_arrays = train_validation_split((x, y, sample_weight), validation_split)
        n = check_cardinality(x, y, sample_weight)
    if class_weight is not None:
        sample_weight = class_weight_to_sample_weight(_single(y), class_weight)
    if batch_size is None:
        batch_size = math.ceil(n / steps_per_epoch) if steps_per_epoch else DEFAULT_BATCH_SIZE
    train = array_loader(x, y, sample_weight, batch_size, shuffle, seed, steps_per_epoch)
    if val_arrays is not None:
        val = array_loader(*val_arrays, batch_size=batch_size)
    elif validation_data is not None:
        val = eval_loader(*_unpack_validation(validation_data), batch_size=batch_size)
    else:
        val = None
    return train, val


def _unpack_validation(validation_data: Any) -> Tuple[Any, Any, Any]:
    if isinstance(validation_data, tuple) and len(validation_data) in (2, 3) and is_array_structure(validation_data[0]):
        x, y = validation_data[0], validation_data[1]
        sw = validation_data[2] if len(validation_data) == 3 else None
        return x, y, sw
    if isinstance(validation_data, (tuple, list)) and is_array_structure(validation_data[0]):
        raise ValueError(
            "Expected `validation_data` to be a tuple `(x_val, y_val)` or `(x_val, y_val, "
            f"val_sample_weight)`, or a dataset. Received a {type(validation_data).__name__} of "
            f"length {len(validation_data)}."
        )
    return validation_data, None, None


def eval_loader(x: Any, y: Any = None, sample_weight: Any = None, batch_size: Optional[int] = None, steps: Optional[int] = None) -> Any:
    """A loader for ``evaluate`` (and validation): never shuffled."""
    check_batch_size(batch_size)
    if not is_array_structure(x):
        from keras_bridge.data.datasets import dataset_eval_loader

        return dataset_eval_loader(x, y, sample_weight, batch_size, steps)
    x, y, sample_weight = to_tensors(x), to_tensors(y), to_tensors(sample_weight)
    check_cardinality(x, y, sample_weight)
    return array_loader(x, y, sample_weight, batch_size or DEFAULT_BATCH_SIZE, False, 0, steps)


def predict_loader(x: Any, batch_size: Optional[int] = None, steps: Optional[int] = None) -> Any:
    """A loader for ``predict``: batches of ``(x,)``."""
    check_batch_size(batch_size)
    if not is_array_structure(x):
        from keras_bridge.data.datasets import dataset_eval_loader

        return dataset_eval_loader(x, None, None, batch_size, steps)
    x = to_tensors(x)
    check_cardinality(x)
    return array_loader(x, None, None, batch_size or DEFAULT_BATCH_SIZE, False, 0, steps)


def loader_length(loader: Any) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def limits_own_steps(loader: Any) -> bool:
    """True when the loader applies ``steps_per_epoch`` itself, carrying its iterator over epochs."""
    from keras_bridge.data.loader import KerasLoader

    return isinstance(loader, KerasLoader) or isinstance(getattr(loader, "sampler", None), GlobalBatchSampler)


def first_batch(loader: Any) -> Any:
    """Peek one batch (Keras does the same to build an unbuilt model)."""
    peek = getattr(loader, "peek", None)
    if callable(peek):
        return peek()
    sampler = getattr(loader, "sampler", None)
    if isinstance(loader, DataLoader) and isinstance(sampler, GlobalBatchSampler):
        return loader.dataset[torch.arange(min(sampler.batch_size, sampler.num_samples))]
    return next(iter(loader))


def unshard_results(loader: Any, per_rank: Sequence[Sequence[Any]]) -> List[Any]:
    """Per-batch results of every process (``per_rank[r]``: process ``r``'s, in step order) in input order.

    Mirrors how ``loader`` shards itself under DDP: a :class:`GlobalBatchSampler` splits every global
    batch across the processes, the dataset loaders deal out whole batches. A user's ``DataLoader``
    with a ``DistributedSampler`` keeps that sampler's order, which the bridge does not undo: its
    results come process by process, with a warning.
    """
    from keras_bridge.data.loader import unshard_whole_batches
    from keras_bridge.data.torch_data import DataLoaderLoader, _is_distributed

    if isinstance(loader, DataLoader) and isinstance(loader.sampler, GlobalBatchSampler):
        return unshard_global_batches(per_rank)
    if isinstance(loader, DataLoaderLoader) and loader._rebuilt() is None and _is_distributed(loader.data):
        import warnings

        warnings.warn(
            "The DataLoader uses a DistributedSampler: its predictions are returned process by process "
            "in the sampler's order (with any padding it adds), not in input order. Pass the DataLoader "
            "without a DistributedSampler to get Keras's order.",
            UserWarning,
            stacklevel=3,
        )
        return [result for results in per_rank for result in results]
    return unshard_whole_batches(per_rank)
