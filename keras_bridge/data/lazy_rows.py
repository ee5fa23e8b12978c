"""Arrays read a batch at a time: an HDF5 dataset (``h5py.Dataset``) as ``x``, ``y`` or ``sample_weight``.

Keras reads such an input whole into memory (``np.asarray``) before its first batch; the bridge reads only the
rows of each batch, so a file larger than memory trains. The batches, their order and their values are those of
the same data given in memory. Keras recommends ``shuffle="batch"`` for HDF5 data: every batch is then one
contiguous block of rows, read in one slice (``shuffle=True`` reads scattered rows, which HDF5 does slowly).

Example:
    >>> import h5py, io
    >>> f = h5py.File(io.BytesIO(), "w")
    >>> rows = LazyRows(f.create_dataset("x", data=np.arange(12.0).reshape(6, 2)))
    >>> rows.shape, rows[torch.tensor([4, 1])].tolist()
    ((6, 2), [[8.0, 9.0], [2.0, 3.0]])
    >>> rows[2:4][torch.tensor([1])].tolist()
    [[6.0, 7.0]]
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from numpy.typing import DTypeLike

from keras_bridge.data.batches import to_tensor

__all__ = ["READ_VALUES", "LazyRows", "is_lazy_array"]

#: Values per block read by the input checks (8 MB of float32).
READ_VALUES = 1 << 21


def is_lazy_array(value: object) -> bool:
    """True for an ``h5py.Dataset`` (recognised without importing h5py)."""
    return type(value).__module__.partition(".")[0] == "h5py" and hasattr(value, "shape") and hasattr(value, "dtype")


class LazyRows:
    """The rows ``start:stop`` of a lazily read array, indexed by a 1-D index tensor per batch.

    Args:
        source: the ``h5py.Dataset``.
        start, stop: the rows it stands for (a validation split takes the last rows of the same file).
    """

    def __init__(self, source: Any, start: int = 0, stop: Optional[int] = None) -> None:
        self.source = source
        self.start = start
        self.stop = len(source) if stop is None else stop

    @property
    def shape(self) -> Tuple[int, ...]:
        return (self.stop - self.start, *tuple(self.source.shape[1:]))

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: Union[slice, torch.Tensor, Sequence[int]]) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError(f"LazyRows takes contiguous slices only; received step {step}.")
            return LazyRows(self.source, self.start + start, self.start + max(start, stop))
        rows = torch.as_tensor(index, dtype=torch.long).reshape(-1) + self.start
        if len(rows) == 0:
            return to_tensor(self.source[self.start : self.start])
        low, high = int(rows.min()), int(rows.max()) + 1
        if high - low == len(rows):  # one contiguous block (shuffle="batch" or no shuffle): one slice read
            block = to_tensor(self.source[low:high])
            return block if bool((rows[1:] > rows[:-1]).all()) else block[rows - low]
        # HDF5 reads a list of rows only in increasing order: read the sorted distinct rows, then reorder.
        distinct, inverse = torch.unique(rows, sorted=True, return_inverse=True)
        return to_tensor(self.source[distinct.numpy()])[inverse]

    def __array__(self, dtype: Optional[DTypeLike] = None, copy: Optional[bool] = None) -> np.ndarray:
        """Every row in memory: for what needs its input whole and is small (the labels behind ``class_weight``)."""
        rows = np.asarray(self.source[self.start : self.stop])
        return rows if dtype is None else rows.astype(dtype)

    def iter_chunks(self, rows: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """``(first row, tensor)`` for consecutive blocks of at most ``rows`` rows: the input checks stream.

        Each block is a new allocation (a view of a memory map is not), so blocks stay under
        :data:`READ_VALUES` values.
        """
        per_row = int(np.prod(self.shape[1:]))
        rows = max(1, min(rows, READ_VALUES // max(1, per_row)))
        for begin in range(self.start, self.stop, rows):
            yield begin - self.start, to_tensor(self.source[begin : min(self.stop, begin + rows)])

    def __repr__(self) -> str:
        return f"LazyRows({self.source!r}, rows {self.start}:{self.stop})"
