"""Dataset objects as ``fit`` input: PyDataset, torch Dataset/DataLoader, iterables of batches."""

from __future__ import annotations

from typing import Any, Optional, Tuple

from torch.utils.data import DataLoader, Dataset


def _refuse_y(y: Any, sample_weight: Any, x: Any) -> None:
    for name, value in (("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            raise ValueError(
                f"`{name}` must not be given when `x` is a dataset ({type(x).__name__}): the "
                f"dataset itself must yield `(x, y)` or `(x, y, sample_weight)` batches. "
                f"Received: {name} of type {type(value).__name__}"
            )


def to_loader(data: Any, batch_size: Optional[int] = None, shuffle: bool = False) -> Any:
    """Wrap a dataset object as something Lightning can iterate."""
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return DataLoader(data, batch_size=batch_size or 32, shuffle=bool(shuffle))
    if hasattr(data, "__iter__"):
        return data
    raise TypeError(
        "Expected `x` to be arrays, a keras.utils.PyDataset, a torch Dataset or DataLoader, or an "
        f"iterable of batches. Received: x of type {type(data).__name__}"
    )


def dataset_fit_loaders(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], shuffle: Any,
                        class_weight: Any, validation_split: float, validation_data: Any,
                        steps_per_epoch: Optional[int], seed: int) -> Tuple[Any, Optional[Any]]:
    _refuse_y(y, sample_weight, x)
    train = to_loader(x, batch_size, shuffle)
    val = None
    if validation_data is not None:
        from keras_bridge.data.adapter import _unpack_validation, eval_loader

        val = eval_loader(*_unpack_validation(validation_data), batch_size=batch_size)
    return train, val


def dataset_eval_loader(x: Any, y: Any, sample_weight: Any, batch_size: Optional[int], steps: Optional[int]) -> Any:
    _refuse_y(y, sample_weight, x)
    return to_loader(x, batch_size, False)
