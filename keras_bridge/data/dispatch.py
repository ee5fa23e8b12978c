"""One door for every input kind: :func:`make_loader` turns Keras's data arguments into a loader.

As Keras's ``get_data_adapter`` does, it picks one adapter per input kind and hands it the call's
:class:`~keras_bridge.data.contract.DataOptions`; every loader honours the
:class:`~keras_bridge.data.contract.Loader` protocol, so no caller looks at its type.

=======================================  =============================================================
input                                    loader (modules under :mod:`keras_bridge.data.adapters`)
=======================================  =============================================================
arrays: anything with ``__array__``      ``array.BatchLoader`` over ``array.GlobalBatchSampler``
(NumPy, pandas, JAX, TF, torch), and     (an ``h5py.Dataset`` stays on disk:
lists / tuples / dicts of them           ``lazy_rows.LazyRows``, read a batch at a time)
``keras.utils.PyDataset``                ``pydataset.PyDatasetLoader``
``torch.utils.data.DataLoader``          ``torch_data.WrappedDataLoader`` (as given)
map-style ``torch.utils.data.Dataset``   batched by ``batch_size`` (``torch_data.sample_loader``)
``torch.utils.data.IterableDataset``     a ``DataLoader(dataset, batch_size)`` used as given
``tf.data.Dataset``, generators, any     ``iterable.IterableLoader`` (batches converted to torch)
other iterable of batches
=======================================  =============================================================
"""

from __future__ import annotations

import dataclasses
import math
import types
import warnings
from typing import Any, Optional, Tuple

from torch.utils.data import DataLoader, IterableDataset

from keras_bridge.data.adapters.array import (
    DEFAULT_BATCH_SIZE,
    BatchLoader,
    array_loader,
    check_batch_size,
    check_cardinality,
    is_array_structure,
    to_tensors,
    train_validation_split,
)
from keras_bridge.data.adapters.iterable import IterableLoader
from keras_bridge.data.adapters.pydataset import PyDatasetLoader, is_py_dataset
from keras_bridge.data.adapters.torch_data import WrappedDataLoader, is_map_dataset, sample_loader
from keras_bridge.data.batches import check_class_weight, check_values, class_weight_to_sample_weight
from keras_bridge.data.contract import DataOptions, Loader
from keras_bridge.data.distributed import group_in_use  # noqa: F401  (for the trainer)
from keras_bridge.data.epoch_iterator import KerasLoader, unwrap
from keras_bridge.typing import ArrayTree, DataInput
from keras_bridge.utils.tree import unpack_x_y_sample_weight


def make_loader(
    x: DataInput, y: ArrayTree = None, sample_weight: ArrayTree = None, options: DataOptions = DataOptions()
) -> Loader:
    """The loader of one call's data, whatever its kind (see the module table).

    ``class_weight`` and ``batch_size`` are checked here, once, for every kind.

    Example:
        >>> import numpy as np
        >>> loader = make_loader(np.zeros((10, 2)), np.zeros(10), options=DataOptions(batch_size=4))
        >>> len(loader), loader.global_batch_size
        (3, 4)

    Raises:
        TypeError: ``x`` is none of the supported kinds.
        ValueError: an option or an array Keras would refuse, naming the argument.
    """
    check_batch_size(options.batch_size)
    arrays = is_array_structure(x)
    if not arrays:
        _refuse_y(y, sample_weight, x)
    check_class_weight(options.class_weight, sample_weight, y)
    if arrays:
        return _array_loader(x, y, sample_weight, options)
    loader = _dataset_loader(unwrap(x), options)
    if options.mode == "fit":
        loader.reset()  # Keras calls on_epoch_end() once when fit() starts
    return loader


def _array_loader(x: Any, y: Any, sample_weight: Any, options: DataOptions) -> BatchLoader:
    if options.mode == "predict":
        (x,) = _arrays(x=x)
        n = check_cardinality(x)
    else:
        x, y, sample_weight = _arrays(x=x, y=y, sample_weight=sample_weight)
        n = check_cardinality(x, y, sample_weight)
        check_values(x, sample_weight)
    batch_size = options.batch_size
    if options.mode == "fit" and batch_size is not None and batch_size > n:
        warnings.warn(
            f"`batch_size={batch_size}` is larger than the {n} samples of `x`: every epoch is one batch of {n}.",
            UserWarning,
            stacklevel=4,
        )
    if options.class_weight is not None:
        sample_weight = class_weight_to_sample_weight(_single(y), options.class_weight)
    if batch_size is None:
        # Keras's array adapter: without a batch size, `steps` batches cover the arrays once.
        sizing = options.steps or options.batching_steps
        batch_size = max(1, math.ceil(n / sizing)) if sizing else DEFAULT_BATCH_SIZE
    shuffle = options.shuffle if not options.evaluation else False
    return array_loader(x, y, sample_weight, batch_size=batch_size, shuffle=shuffle, seed=options.seed,
                        steps_per_epoch=options.steps)  # fmt: skip


def _dataset_loader(data: Any, options: DataOptions) -> Loader:
    """The adapter of a dataset ``x`` (every kind but arrays)."""
    if isinstance(data, (KerasLoader, BatchLoader)):
        return data  # built by the bridge already (e.g. by to_dataloader)
    if is_py_dataset(data):
        if data.num_batches is None and options.shuffle and not options.evaluation:
            warnings.warn(
                "`shuffle=True` was passed, but will be ignored since the data `x` was provided as an "
                "infinite PyDataset. The PyDataset is expected to already be shuffled.",
                stacklevel=4,
            )
            options = dataclasses.replace(options, shuffle=False)
        return PyDatasetLoader(data, options)
    if isinstance(data, DataLoader):
        _shuffle_ignored(options, "a torch DataLoader. The DataLoader is expected to already be shuffled.")
        return WrappedDataLoader(data, options)
    if is_map_dataset(data):
        return sample_loader(data, options)
    if isinstance(data, IterableDataset):
        return WrappedDataLoader(DataLoader(data, batch_size=options.batch_size or DEFAULT_BATCH_SIZE), options)
    if _is_tf_dataset(data):
        _shuffle_ignored(
            options, "a tf.data.Dataset. The Dataset is expected to already be shuffled (via `.shuffle(buffer_size)`)."
        )
    elif isinstance(data, types.GeneratorType):
        _shuffle_ignored(options, "a generator. The generator is expected to yield already-shuffled data.")
    if hasattr(data, "__iter__") and not isinstance(data, (str, bytes)):
        return IterableLoader(data, options)
    raise TypeError(
        "Expected `x` to be arrays (anything with `__array__`: NumPy, pandas, JAX, TensorFlow, torch; or "
        "lists/dicts of them), a keras.utils.PyDataset, a tf.data.Dataset, a torch Dataset or DataLoader, "
        f"or an iterable of batches. Received: x of type {type(data).__name__}"
    )


def _shuffle_ignored(options: DataOptions, provided_as: str) -> None:
    """Keras's warning when ``fit`` gets ``shuffle=True`` (its default) with data that shuffles itself."""
    if options.shuffle and not options.evaluation:
        warnings.warn(
            f"`shuffle=True` was passed, but will be ignored since the data `x` was provided as {provided_as}",
            stacklevel=5,
        )


def _is_tf_dataset(data: object) -> bool:
    # By class, as Keras tells it: TensorFlow is never imported for it.
    return any(
        c.__module__.startswith("tensorflow.python.data") and c.__name__ in ("DatasetV2", "DistributedDataset")
        for c in type(data).__mro__
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


def _refuse_y(y: ArrayTree, sample_weight: ArrayTree, x: DataInput) -> None:
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(
                f"`{name}` must not be given when `x` is a dataset ({type(x).__name__}): the dataset "
                f"itself must yield `(x, y)` or `(x, y, sample_weight)` batches. Received: {name} of "
                f"type {type(value).__name__}"
            )


def _single(y: object) -> Any:
    if isinstance(y, (list, tuple)):
        return y[0]
    if isinstance(y, dict):
        return next(iter(y.values()))
    return y


def split_validation(
    x: DataInput, y: ArrayTree, sample_weight: ArrayTree, validation_split: float, validation_data: DataInput
) -> Tuple[Tuple[Any, Any, Any], Optional[Tuple[Any, Any, Any]]]:
    """``fit``'s training and validation data, as Keras's trainer splits them (its caller owns the arguments).

    ``validation_data`` wins over ``validation_split``; a split takes the LAST fraction of array data,
    before any shuffling.

    Returns:
        ``((x, y, sample_weight), (x_val, y_val, sw_val) or None)``.

    Example:
        >>> import numpy as np
        >>> (x, _, _), (x_val, _, _) = split_validation(np.arange(10.0), None, None, 0.2, None)
        >>> len(x), x_val.tolist()
        (8, [8.0, 9.0])
    """
    if validation_data is not None:
        return (x, y, sample_weight), _unpack_validation(validation_data)
    if not validation_split:
        return (x, y, sample_weight), None
    if not is_array_structure(x):
        raise ValueError(
            "`validation_split` is only supported for arrays and tensors, not for a dataset "
            f"(x of type {type(x).__name__}). Pass `validation_data=` instead. Received: "
            f"validation_split={validation_split}"
        )
    arrays = _arrays(x=x, y=y, sample_weight=sample_weight)
    return train_validation_split(arrays, validation_split)


def validation_loader(validation: Tuple[Any, Any, Any], options: DataOptions, from_split: bool) -> Loader:
    """The loader of ``fit``'s validation data; errors on ``validation_data`` say so.

    Each validation starts again from the first batch (Lightning's ``limit_val_batches`` takes
    ``validation_steps`` of them); ``options.batching_steps`` only sizes the default batch of arrays.
    """
    if from_split:
        return make_loader(*validation, options=options)
    try:
        return make_loader(*validation, options=options)
    except (TypeError, ValueError) as err:
        if type(err) not in (TypeError, ValueError):
            raise
        raise type(err)(f"Invalid `validation_data`: {err}") from None


def _unpack_validation(validation_data: object) -> Tuple[Any, Any, Any]:
    try:  # Keras's trainer unpacks `validation_data` as it unpacks a batch
        return unpack_x_y_sample_weight(validation_data)
    except ValueError as err:
        raise ValueError(
            "Expected `validation_data` to be a tuple `(x_val, y_val)` or `(x_val, y_val, val_sample_weight)`, or "
            f"a dataset. {err}"
        ) from None


def loader_length(loader: Any) -> Optional[int]:
    try:
        return len(loader)
    except TypeError:
        return None
