"""Keras's data arguments to loaders: one dispatch over every input kind.

=======================================  =============================================================
input                                    loader (modules under :mod:`keras_bridge.data.adapters`)
=======================================  =============================================================
arrays (NumPy, torch, lists/dicts)       a ``DataLoader`` over ``array.GlobalBatchSampler``
``keras.utils.PyDataset``                ``pydataset.PyDatasetLoader``
``torch.utils.data.DataLoader``          ``torch_data.WrappedDataLoader`` (as given)
map-style ``torch.utils.data.Dataset``   batched by ``batch_size`` (``torch_data.sample_loader``)
``torch.utils.data.IterableDataset``     a ``DataLoader(dataset, batch_size)`` used as given
any other iterable of batches            ``iterable.IterableLoader``
=======================================  =============================================================
"""

from __future__ import annotations

import math
import warnings
from typing import Any, List, Optional, Sequence, Tuple, cast

import torch
from torch.utils.data import DataLoader, IterableDataset

import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.data.adapters.array import (
    DEFAULT_BATCH_SIZE,
    GlobalBatchSampler,
    array_loader,
    check_batch_size,
    check_cardinality,
    is_array_structure,
    to_tensors,
    train_validation_split,
)
from keras_bridge.data.adapters.iterable import IterableLoader
from keras_bridge.data.adapters.pydataset import PyDatasetLoader, is_py_dataset
from keras_bridge.data.adapters.torch_data import WrappedDataLoader, is_distributed, is_map_dataset, sample_loader
from keras_bridge.data.batches import check_class_weight, check_values, class_weight_to_sample_weight
from keras_bridge.data.distributed import group_in_use, unshard_steps  # noqa: F401  (group_in_use: for engine)
from keras_bridge.data.epoch_iterator import KerasLoader, unwrap


def make_loader(data: Any, batch_size: Optional[int] = None, shuffle: Any = False, class_weight: Any = None,
                steps_per_epoch: Optional[int] = None, seed: Optional[int] = None,
                evaluation: bool = False) -> Any:  # fmt: skip
    """The loader for one dataset object (see the module table); a ``KerasLoader`` or one of our DataLoaders.

    Raises:
        TypeError: ``data`` is none of the supported kinds.
    """
    data = unwrap(data)
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
        return WrappedDataLoader(data, steps_per_epoch, class_weight, seed, evaluation)
    if is_map_dataset(data):
        # steps apply per evaluate() call (the engine limits them), never carried over.
        steps = None if evaluation else steps_per_epoch
        return sample_loader(data, batch_size, shuffle, seed, steps, class_weight)
    if isinstance(data, IterableDataset):
        loader = DataLoader(data, batch_size=batch_size or DEFAULT_BATCH_SIZE)
        return WrappedDataLoader(loader, steps_per_epoch, class_weight, seed, evaluation)
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        return IterableLoader(data, steps_per_epoch, class_weight, evaluation)
    raise TypeError(
        "Expected `x` to be arrays (NumPy, torch, or lists/dicts of them), a keras.utils.PyDataset, a "
        "torch Dataset or DataLoader, or an iterable of batches. Received: x of type "
        f"{type(data).__name__}"
    )


def _arrays(**named: Any) -> Tuple[Any, ...]:
    """Each array structure as tensors; an error names the argument (``x``, ``y`` or ``sample_weight``)."""
    out = []
    for name, value in named.items():
        try:
            out.append(to_tensors(value))
        except TypeError as err:
            raise TypeError(f"Invalid `{name}`: {err}") from None
    return tuple(out)


def _refuse_y(y: Any, sample_weight: Any, x: Any) -> None:
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(
                f"`{name}` must not be given when `x` is a dataset ({type(x).__name__}): the dataset "
                f"itself must yield `(x, y)` or `(x, y, sample_weight)` batches. Received: {name} of "
                f"type {type(value).__name__}"
            )


def _single(y: Any) -> Any:
    if isinstance(y, (list, tuple)):
        return y[0]
    if isinstance(y, dict):
        return next(iter(y.values()))
    return y


def fit_loaders(x: Any, y: Any = None, sample_weight: Any = None, batch_size: Optional[int] = None,
                shuffle: Any = True, class_weight: Any = None, validation_split: float = 0.0,
                validation_data: Any = None, steps_per_epoch: Optional[int] = None, seed: Optional[int] = None,
                validation_steps: Optional[int] = None, validation_batch_size: Optional[int] = None) -> Tuple[Any,
                Optional[Any]]:  # fmt: skip
    """Return ``(train_loader, val_loader_or_None)`` for ``fit``.

    Validation arrays are batched as Keras batches them: ``validation_batch_size or batch_size``, else
    ``ceil(n / validation_steps)`` when ``validation_steps`` is given, else 32.

    ``seed`` None (the default) shuffles as Keras does, from the global generators; an int gives the
    bridge's independent seeded shuffle (:mod:`keras_bridge.data.keras_rng`).
    """
    check_batch_size(batch_size)
    check_batch_size(validation_batch_size)
    val_batch_size = validation_batch_size or batch_size
    if is_array_structure(x):
        check_class_weight(class_weight, sample_weight, y)
    else:
        check_class_weight(class_weight)
    if not is_array_structure(x):
        return dataset_fit_loaders(x, y, sample_weight, batch_size, shuffle, class_weight, validation_split,
                                   validation_data, steps_per_epoch, seed, val_batch_size,
                                   validation_steps)  # fmt: skip
    x, y, sample_weight = _arrays(x=x, y=y, sample_weight=sample_weight)
    n = check_cardinality(x, y, sample_weight)
    check_values(x, sample_weight)
    if batch_size is not None and batch_size > n:
        warnings.warn(
            f"`batch_size={batch_size}` is larger than the {n} samples of `x`: every epoch is one batch of {n}.",
            UserWarning,
            stacklevel=3,
        )
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
        val_x, val_y, val_sw = val_arrays
        n_val = check_cardinality(val_x, val_y, val_sw)
        val = array_loader(val_x, val_y, val_sw, _eval_batch_size(val_batch_size, n_val, validation_steps))
    elif validation_data is not None:
        val = _validation_loader(validation_data, val_batch_size, validation_steps)
    else:
        val = None
    return train, val


def dataset_fit_loaders(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], shuffle: Any,
                        class_weight: Any, validation_split: float, validation_data: Any,
                        steps_per_epoch: Optional[int], seed: Optional[int], val_batch_size: Optional[int] = None,
                        validation_steps: Optional[int] = None) -> Tuple[Any, Optional[Any]]:  # fmt: skip
    """``(train_loader, val_loader_or_None)`` for a dataset ``x``."""
    _refuse_y(y, sample_weight, x)
    if validation_split:
        raise ValueError(
            "`validation_split` is only supported for arrays and tensors, not for a dataset "
            f"(x of type {type(x).__name__}). Pass `validation_data=` instead. Received: "
            f"validation_split={validation_split}"
        )
    train = make_loader(x, batch_size, shuffle, class_weight, steps_per_epoch, seed)
    if isinstance(train, KerasLoader):
        train.reset()  # Keras calls on_epoch_end() once when fit() starts
    val = None
    if validation_data is not None:
        val = _validation_loader(validation_data, val_batch_size or batch_size, validation_steps)
    return train, val


def _validation_loader(validation_data: Any, batch_size: Optional[int], validation_steps: Optional[int] = None) -> Any:
    """The loader of ``validation_data``; its errors say it is ``validation_data`` that holds ``x`` / ``y``.

    Each validation starts again from the first batch (Lightning's ``limit_val_batches`` takes
    ``validation_steps`` of them); ``validation_steps`` only sizes the default batch of arrays.
    """
    unpacked = _unpack_validation(validation_data)
    try:
        return eval_loader(*unpacked, batch_size=batch_size, default_steps=validation_steps)
    except (TypeError, ValueError) as err:
        if type(err) not in (TypeError, ValueError):
            raise
        raise type(err)(f"Invalid `validation_data`: {err}") from None


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


def eval_loader(
    x: Any, y: Any = None, sample_weight: Any = None, batch_size: Optional[int] = None, steps: Optional[int] = None,
    default_steps: Optional[int] = None,
) -> Any:  # fmt: skip
    """A loader for ``evaluate`` (and validation): never shuffled.

    Arrays without a ``batch_size`` are batched as Keras does: ``ceil(n / steps)`` when ``steps`` (or
    ``default_steps``, which limits nothing) is given, else 32.
    """
    check_batch_size(batch_size)
    if not is_array_structure(x):
        return dataset_eval_loader(x, y, sample_weight, batch_size, steps)
    x, y, sample_weight = _arrays(x=x, y=y, sample_weight=sample_weight)
    n = check_cardinality(x, y, sample_weight)
    check_values(x, sample_weight)
    return array_loader(
        x, y, sample_weight, _eval_batch_size(batch_size, n, steps or default_steps), False, None, steps
    )


def _eval_batch_size(batch_size: Optional[int], n: int, steps: Optional[int]) -> int:
    # Keras's array adapter: without a batch size, `steps` batches cover the arrays once.
    if batch_size:
        return batch_size
    return max(1, math.ceil(n / steps)) if steps else DEFAULT_BATCH_SIZE


def predict_loader(x: Any, batch_size: Optional[int] = None, steps: Optional[int] = None) -> Any:
    """A loader for ``predict``: batches of ``(x,)``."""
    check_batch_size(batch_size)
    if not is_array_structure(x):
        return dataset_eval_loader(x, None, None, batch_size, steps)
    (x,) = _arrays(x=x)
    n = check_cardinality(x)
    return array_loader(x, None, None, _eval_batch_size(batch_size, n, steps), False, None, steps)


def dataset_eval_loader(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], steps: Optional[int]) -> Any:
    """The loader for ``evaluate``/``predict``/validation on a dataset ``x`` (never shuffled)."""
    _refuse_y(y, sample_weight, x)
    return make_loader(x, batch_size, False, None, steps, None, evaluation=True)


def split_tuple(data: Any) -> Tuple[Any, Any, Any]:
    # A tuple is unpacked the way Keras unpacks dataset elements; a list or dict is a multi-input x.
    if isinstance(data, tuple) and len(data) in (2, 3):
        return data[0], data[1], data[2] if len(data) == 3 else None
    if isinstance(data, tuple) and len(data) == 1:
        return data[0], None, None
    return data, None, None


def loader_length(loader: Any) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None


def limits_own_steps(loader: Any) -> bool:
    """True when the loader applies ``steps_per_epoch`` itself, carrying its iterator over epochs."""
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
    if isinstance(loader, WrappedDataLoader) and loader.rebuilt() is None and is_distributed(loader.loader):
        warnings.warn(
            "The DataLoader uses a DistributedSampler: its predictions are returned process by process "
            "in the sampler's order (with any padding it adds), not in input order. Pass the DataLoader "
            "without a DistributedSampler to get Keras's order.",
            UserWarning,
            stacklevel=3,
        )
        return [result for results in per_rank for result in results]
    return unshard_steps(per_rank)


def is_array_loader(loader: Any) -> bool:
    """True for a loader the bridge built over in-memory arrays (Keras feeds those through a DataLoader)."""
    return isinstance(loader, DataLoader) and isinstance(loader.sampler, GlobalBatchSampler)


def keras_pass_draws(loader: Any, steps: Optional[int] = None, evaluation: bool = False) -> keras_rng.PassDraws:
    """The base-seed draws Keras's torch ``DataLoader`` takes around each pass of ``loader`` that the loader
    itself does not take (Keras opens an iterator when a pass starts and the next one when it ends).

    Args:
        loader: the loader (None: no draws).
        steps: ``steps_per_epoch`` of a training loader, ``steps`` of an evaluation one.
        evaluation: an evaluation / prediction loader.
    """
    loader = unwrap(loader)
    if loader is None:
        return keras_rng.NO_DRAWS
    rows = None if evaluation or not is_array_loader(loader) else cast(GlobalBatchSampler, loader.sampler).shuffle_rows
    # Keras opens the next iterator only when a pass has been read to its end.
    length = _pass_length(loader)
    at_end = int(length is not None and (steps is None or length <= steps))
    if steps is not None and not evaluation:
        # A pass carried over between epochs: Keras opens the first iterator when the fit's first epoch
        # starts, and the next one at the end of an epoch that read its pass to the end.
        if is_array_loader(loader) or isinstance(loader, PyDatasetLoader):
            carry = loader.sampler.carry if is_array_loader(loader) else loader.order.carry
            first = lambda: carry.passes_started == 0  # noqa: E731
            return keras_rng.PassDraws(1, int(length is not None), rows=rows, start_if=first, end_if=carry.pass_read)
        return keras_rng.NO_DRAWS  # a DataLoader opens its own iterators (when the next epoch starts)
    if is_array_loader(loader) or isinstance(loader, PyDatasetLoader):
        return keras_rng.PassDraws(1, at_end, rows=rows)  # their own iterators draw nothing from the global generator
    if isinstance(loader, WrappedDataLoader):
        source = loader.loader
        # A persistent-workers iterator is reused: reopening it draws nothing.
        reopens = not (source.persistent_workers and source.num_workers > 0)
        return keras_rng.PassDraws(0, at_end * reopens, source.generator)  # it opens its own at the start
    return keras_rng.NO_DRAWS


def _pass_length(loader: Any) -> Optional[int]:
    """Batches in one whole pass of ``loader`` (not limited by steps), None when unknown."""
    if is_array_loader(loader):
        return cast(GlobalBatchSampler, loader.sampler).batches_per_pass
    if isinstance(loader, KerasLoader):
        return loader.num_batches()
    return loader_length(loader)


def take_peek_draws(loader: Any) -> None:
    """Take what Keras's build peek draws (it opens an iterator over the input and reads one batch).

    A user's ``DataLoader`` draws it itself when the bridge peeks into it.
    """
    loader = unwrap(loader)
    if is_array_loader(loader):
        cast(GlobalBatchSampler, loader.sampler).take_peek_draws()
    elif isinstance(loader, PyDatasetLoader):
        keras_rng.draw()
        loader.order.take_peek_draws(loader.py_dataset.num_batches)
