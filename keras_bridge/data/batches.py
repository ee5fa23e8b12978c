"""One batch from a dataset object, made ready for the module: Keras's unpacking rules, torch tensors, class weights.

Every dataset kind (PyDataset, torch Dataset/DataLoader, iterables of batches) funnels its batches
through :func:`prepare_batch`, so the rules and the error messages are the same for all of them.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Optional, Protocol, Tuple, TypeGuard, Union

import numpy as np
import torch

from keras_bridge.typing import ArrayTree, SupportsArray
from keras_bridge.utils.keras import keras_floatx
from keras_bridge.utils.tree import map_structure

Tensor = torch.Tensor


def _from_numpy(arr: np.ndarray) -> Tensor:
    """``torch.from_numpy`` that shares a read-only array (a ``np.memmap`` opened with ``mode="r"``) quietly.

    torch warns that writing into such a tensor is undefined; the bridge never writes into input data
    (batches are gathered copies), so the memory is shared rather than read into a copy.
    """
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def _floatx(t: Tensor) -> Tensor:
    # Keras feeds float64 data to the model as floatx (float32).
    return t.float() if t.dtype == torch.float64 else t


def _array_floatx(t: Tensor) -> Tensor:
    # Keras's array adapters hand every float array (float16, bfloat16, float64) to the model in floatx.
    if not t.is_floating_point():
        return t
    floatx = getattr(torch, keras_floatx())
    return t if t.dtype == floatx else t.to(floatx)


def is_array(obj: object) -> TypeGuard[Union[Tensor, SupportsArray]]:
    """Keras's rule for an array: a torch tensor or anything NumPy can read (``__array__``).

    NumPy arrays, pandas ``DataFrame`` / ``Series``, JAX arrays and TensorFlow tensors all qualify, so they
    are sliced into batches; a dataset object (a generator, a ``tf.data.Dataset``, a ``PyDataset``) does not.

    Example:
        >>> is_array(np.zeros(2)), is_array(iter([]))
        (True, False)
    """
    return isinstance(obj, torch.Tensor) or hasattr(obj, "__array__")


class _Pandas(Protocol):
    def to_numpy(self) -> np.ndarray: ...


def _is_pandas(value: object) -> TypeGuard[_Pandas]:
    return type(value).__module__.partition(".")[0] == "pandas" and hasattr(value, "to_numpy")


def _torch_dtype_for(arr: np.ndarray) -> np.ndarray:
    """``arr`` in a dtype torch holds: ``ml_dtypes`` floats (bfloat16, float8, ...) become floatx, as in Keras."""
    if arr.dtype.kind == "V" and arr.dtype.names is None:
        import ml_dtypes  # a dependency of Keras; imported only when such an array comes

        try:
            ml_dtypes.finfo(arr.dtype)
        except ValueError:
            return arr
        return arr.astype(np.float32)
    return arr


def as_numpy(value: object) -> np.ndarray:
    """An array-like as NumPy, the way Keras reads it: a ``DataFrame`` by its columns in their order, a ``Series``
    as one column ``(N, 1)``, anything else through ``np.asarray`` (no copy where the source allows).

    Example:
        >>> as_numpy([1.0, 2.0]).shape
        (2,)
    """
    if _is_pandas(value):
        arr = value.to_numpy()
        return _torch_dtype_for(arr[:, None] if arr.ndim == 1 else arr)
    return _torch_dtype_for(np.asarray(value))


def to_tensor(value: object) -> Tensor:
    """An array as a torch tensor (floats in Keras's floatx, as Keras's array adapters feed them); object arrays are
    refused.

    Example:
        >>> to_tensor(np.zeros((2, 3))).dtype, to_tensor(np.zeros(2, np.float16)).dtype
        (torch.float32, torch.float32)
    """
    if isinstance(value, torch.Tensor):
        t = value
    else:
        arr = as_numpy(value)
        if arr.dtype == object:
            raise TypeError(f"Cannot use an array of Python objects as model data: {arr[:3]!r}...")
        if arr.dtype.kind in "USV":
            example = arr.flat[0] if arr.size else None
            raise TypeError(
                "Expected model data to be numbers (arrays of bools, ints or floats). "
                f"Received an array of dtype {arr.dtype} (e.g. {example!r}) of shape {arr.shape}"
            )
        t = _from_numpy(np.ascontiguousarray(arr))
    return _array_floatx(t)


def _leaves_with_paths(value: object, path: str = "") -> Any:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves_with_paths(item, f"{path}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves_with_paths(item, f"{path}[{index}]")
    elif isinstance(value, Tensor) or hasattr(value, "iter_chunks"):  # a tensor, or rows read lazily (an HDF5 file)
        yield path, value


def check_values(x: ArrayTree = None, sample_weight: ArrayTree = None) -> None:
    """Refuse NaN or infinite values in ``x`` or ``sample_weight`` and negative sample weights.

    Keras trains on them without a word, and the loss and then every weight become NaN (or the
    weighted mean of the loss is no longer a mean). Checked once, on the arrays, before training.
    Targets are left as Keras leaves them: an infinite ``y`` is how a NaN loss is provoked on purpose
    (Keras's own ``TerminateOnNaN`` tests do).

    Raises:
        ValueError: naming the argument, the first sample concerned and its value.

    Example:
        >>> check_values(x=torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
        Traceback (most recent call last):
        ...
        ValueError: Expected `x` to hold finite numbers. Received: x with 1 NaN or infinite value(s), ... sample 1: nan
    """
    for name, value in (("x", x), ("sample_weight", sample_weight)):
        for path, leaf in _leaves_with_paths(value):
            # Streamed in chunks of samples: an input larger than memory (a np.memmap) is read once, and
            # the only temporaries are one chunk's.
            for _, chunk in _sample_chunks(leaf):
                floating = chunk.is_floating_point() or chunk.is_complex()
                # The sum is one pass without a copy and is finite whenever every value is (an overflow
                # only sends it to the exact check).
                if floating and not bool(torch.isfinite(chunk.sum())) and bool((~torch.isfinite(chunk)).any()):
                    _refuse(
                        name,
                        path,
                        leaf,
                        "hold finite numbers",
                        "NaN or infinite value(s)",
                        lambda t: ~torch.isfinite(t),
                    )
                if name == "sample_weight" and chunk.dtype != torch.bool and bool((chunk < 0).any()):
                    _refuse(
                        name,
                        path,
                        leaf,
                        "be >= 0 (a weight of 0 ignores a sample)",
                        "negative value(s)",
                        lambda t: t < 0,
                    )


#: Values per chunk of the input checks (64 MB of float32).
_CHUNK_VALUES = 1 << 24


def _sample_chunks(leaf: Any) -> Any:
    """``(first sample, chunk)``: consecutive slices of ``leaf`` along its samples, each about
    :data:`_CHUNK_VALUES` values (views of a tensor; reads of rows kept on disk).
    """
    per_sample = int(np.prod(leaf.shape[1:])) if len(leaf.shape) > 1 else 1
    rows = max(1, _CHUNK_VALUES // max(1, per_sample))
    if hasattr(leaf, "iter_chunks"):
        yield from leaf.iter_chunks(rows)
        return
    if leaf.dim() == 0 or leaf.numel() <= _CHUNK_VALUES:
        yield 0, leaf
        return
    for start in range(0, len(leaf), rows):
        yield start, leaf[start : start + rows]


def _refuse(name: str, path: str, leaf: Any, accepted: str, what: str, is_bad: Callable[[Tensor], Tensor]) -> None:
    """Raise for the values ``is_bad`` marks, naming the first (counted chunk by chunk: no full-size temporary)."""
    count, first, value = 0, None, None
    for offset, chunk in _sample_chunks(leaf):
        bad = is_bad(chunk)
        count += int(bad.sum())
        if first is None and bool(bad.any()):
            position = int(bad.flatten().nonzero()[0])
            per_sample = chunk[0].numel() if chunk.dim() > 1 and len(chunk) else 1
            first, value = offset + position // per_sample, chunk.flatten()[position].item()
    raise ValueError(
        f"Expected `{name}` to {accepted}. "
        f"Received: {name}{path} with {count} {what}, the first at sample {first}: {value}"
    )


def _leaf_to_torch(value: object) -> Any:
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, (np.ndarray, np.generic)) or (is_array(value) and not isinstance(value, (str, bytes))):
        # NumPy, and the tensors of other frameworks a dataset yields (tf.data, JAX), read through NumPy.
        arr = as_numpy(value)
        if arr.dtype == object or arr.dtype.kind in "USV":
            return value  # strings, ragged lists: the model decides what to do with them
        t = _from_numpy(np.ascontiguousarray(arr))
    else:
        return value
    return _floatx(t)


def to_torch(batch: object) -> Any:
    """Convert the NumPy leaves of a batch to torch tensors (float64 becomes float32, as in Keras).

    Example:
        >>> to_torch((np.zeros((2, 3)), np.arange(2)))[0].dtype
        torch.float32
    """
    return map_structure(_leaf_to_torch, batch)


def standardize(batch: object, where: str) -> Any:
    """Apply Keras's rules for a dataset element: an array is ``(x,)``, a list is a tuple, a dict is ``x``.

    Args:
        batch: what the dataset produced.
        where: names the batch in error messages, e.g. ``"PyDataset.__getitem__(3)"``.

    Returns:
        A dict, or a tuple ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``.

    Raises:
        ValueError: any other structure, naming ``where`` and what was received.

    Example:
        >>> len(standardize([np.zeros(2), np.zeros(2)], "batch 0"))
        2
    """
    if isinstance(batch, Mapping):
        return batch
    if is_array(batch):
        return (batch,)
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple) or len(batch) not in (1, 2, 3):
        got = (
            f"a {type(batch).__name__} of length {len(batch)}"
            if isinstance(batch, tuple)
            else f"a {type(batch).__name__}"
        )
        raise ValueError(
            f"{where} must return a batch `x`, `(x,)`, `(x, y)` or `(x, y, sample_weight)` (a tuple of "
            f"length 1-3, a dict or an array). Received {got}: {str(batch)[:100]}"
        )
    return batch


def check_class_weight(class_weight: Any, sample_weight: Any = None, y: Any = None) -> None:
    """Refuse a ``class_weight`` Keras would refuse, naming the argument and what is accepted.

    Example:
        >>> check_class_weight({0: 1.0, 1: "x"})
        Traceback (most recent call last):
        ...
        ValueError: Expected `class_weight` to be a dict ... Received: class_weight={0: 1.0, 1: 'x'}
    """
    if class_weight is None:
        return
    valid = isinstance(class_weight, Mapping)
    if valid:
        try:
            [(int(k), float(v)) for k, v in class_weight.items()]
        except (TypeError, ValueError):
            valid = False
    if not valid:
        raise ValueError(
            "Expected `class_weight` to be a dict mapping class indices (ints) to weights (numbers). "
            f"Received: class_weight={class_weight!r}"
        )
    bad = {k: v for k, v in class_weight.items() if not (np.isfinite(float(v)) and float(v) >= 0)}
    if bad:
        raise ValueError(
            "Expected the weights in `class_weight` to be finite numbers >= 0 (a weight of 0 ignores a class). "
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


def class_weight_to_sample_weight(y: Any, class_weight: Mapping[Any, float]) -> Tensor:
    """Per-sample weights from a ``{class: weight}`` dict checked by :func:`check_class_weight`.

    Unknown classes weigh 1.0; one-hot targets use their argmax, ``(N, 1)`` targets are squeezed,
    floats are rounded.

    Example:
        >>> class_weight_to_sample_weight(np.array([0, 1, 2, 1]), {0: 1.0, 1: 5.0}).tolist()
        [1.0, 5.0, 1.0, 5.0]
    """
    y = to_tensor(y)
    if y.ndim > 1:
        y = y.argmax(dim=-1) if y.shape[-1] != 1 else y.squeeze(-1)
    classes = torch.round(y.double()).long() if y.is_floating_point() else y.long()
    table = {int(k): float(v) for k, v in class_weight.items()}
    if not table or not classes.numel():
        return torch.ones(classes.shape[0])
    # A lookup table from the smallest to the largest class seen, labels without a weight weigh 1.0.
    low = min(min(table), int(classes.min()))
    high = max(max(table), int(classes.max()))
    lut = torch.ones(high - low + 1, dtype=torch.float32)
    for k, v in table.items():
        lut[k - low] = v
    return lut[classes - low]


def add_class_weight(batch: Tuple[Any, ...], class_weight: Mapping[Any, float], where: str) -> Tuple[Any, ...]:
    """Append per-sample weights looked up from ``class_weight`` to an ``(x, y)`` batch."""
    if not isinstance(batch, tuple) or len(batch) == 1:
        return batch  # no targets: nothing to weight (predict-style batches)
    if len(batch) == 3:
        raise ValueError(
            f"{where} yields `(x, y, sample_weight)` but `class_weight` was also given: you cannot use "
            "`class_weight` and `sample_weight` at the same time. Fold the class weights into the "
            "sample weights your dataset returns, or drop `class_weight`."
        )
    y = batch[1]
    if isinstance(y, (list, tuple, Mapping)):
        if len(y) != 1:
            raise ValueError(
                f"`class_weight` is only supported for models with a single output, but {where} yields "
                f"{len(y)} targets. Use per-output sample weights instead."
            )
        y = next(iter(y.values())) if isinstance(y, Mapping) else y[0]
    sample_weight = class_weight_to_sample_weight(y, class_weight)
    # Keep the batch homogeneous: NumPy batches stay NumPy until they reach the main process.
    return batch + (sample_weight if isinstance(y, torch.Tensor) else sample_weight.numpy(),)


def prepare_batch(
    batch: object, where: str, class_weight: Optional[Mapping[Any, float]] = None, convert: bool = True
) -> Any:
    """Standardize, apply ``class_weight`` and convert to torch: what every dataset batch goes through.

    ``convert=False`` leaves NumPy leaves as they are: a worker process sends NumPy arrays through its
    pipe faster than torch tensors through shared memory, and the main process converts them.
    """
    standard = standardize(batch, where)
    if class_weight is not None:
        standard = add_class_weight(standard, class_weight, where)
    return to_torch(standard) if convert else standard


def empty_like(batch: object) -> Any:
    """The same structure with zero rows: what a DDP process gets when it has no batch left this step."""
    sliceable = (torch.Tensor, np.ndarray)
    return map_structure(lambda v: v[:0] if isinstance(v, sliceable) and v.ndim > 0 else v, batch)


def reraise_with_context(exc: BaseException, message: str) -> BaseException:
    """An exception of the same type whose message starts with ``message`` (RuntimeError if the type refuses).

    The caller raises it ``from exc`` so the original traceback stays attached, also across worker processes.
    """
    text = f"{message}: {type(exc).__name__}: {exc}"
    try:
        new = type(exc)(text)
        if str(new) != text and not isinstance(exc, KeyError):
            raise TypeError
    except Exception:  # constructors with other signatures (e.g. UnicodeDecodeError)
        new = RuntimeError(text)
    return new
