"""Torch twins of the Keras loss functions and reductions that Keras's own cost too much per step.

Keras's functions take and return torch tensors on the torch backend, and the bridge calls them, except
those listed in :func:`native_losses` (and the reductions, :func:`reduce_weighted_values`), where Keras's
own costs more than 1.25x the twin on the shapes of ``bench/run.py`` (``python bench/losses.py``) or needs
a host sync. Every twin reproduces the maths of the Keras 3 function of the same name, including Keras's
quirks (epsilon clipping, the rank fix-ups, the sample-weight broadcasting rules), with torch ops only and
no host synchronisation.

Shared by :mod:`keras_bridge.compile.losses.terms` and :mod:`keras_bridge.compile.metrics.stateful`.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy
import torch
import torch.nn.functional as F
from torch import Tensor

from keras_bridge.utils.compat import get_keras_mask
from keras_bridge.utils.errors import LabelRangeError
from keras_bridge.utils.keras import import_keras, keras_floatx


def epsilon() -> float:
    """``keras.config.epsilon()`` (1e-7 unless the user changed it)."""
    return import_keras().config.epsilon()


def floatx() -> torch.dtype:
    """``keras.config.floatx()`` as a torch dtype."""
    return torch_dtype(keras_floatx())


def torch_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """A Keras dtype name ("float32") or torch dtype as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, str(dtype))


def snake_case(name: str) -> str:
    """Keras's ``to_snake_case``: "BCEWithLogitsLoss" -> "bce_with_logits_loss", "<lambda>" -> "lambda"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def object_name(obj: object) -> str:
    """Keras's ``get_object_name``: ``.name``, else snake_case of ``__name__``, else of the class name."""
    if hasattr(obj, "name") and isinstance(obj.name, str):
        return obj.name
    if hasattr(obj, "__name__"):
        return snake_case(obj.__name__)
    return snake_case(type(obj).__name__)


def keras_device(tensor: Optional[Tensor]) -> Any:
    """Context that makes Keras ops create their tensors on ``tensor``'s device (not Keras's default)."""
    if not isinstance(tensor, Tensor):
        return contextlib.nullcontext()
    return import_keras().device(str(tensor.device))


def get_mask(x: Any) -> Optional[Tensor]:
    """The Keras mask attached to a tensor, if any."""
    return get_keras_mask(x)


def as_tensor(x: Any, like: Optional[Tensor] = None, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``x`` as a tensor (on ``like``'s device when it is not one already).

    A Python number becomes a device tensor through ``torch.full`` (a fill kernel, no host-to-device
    copy), so a weight such as the batch size costs no synchronisation.
    """
    if isinstance(x, Tensor):
        return x if dtype is None else x.to(dtype)
    device = like.device if like is not None else None
    if isinstance(x, (bool, int, float)) or (hasattr(x, "ndim") and x.ndim == 0 and hasattr(x, "item")):
        number = x.item() if hasattr(x, "item") else x
        if dtype is None:
            dtype = (
                torch.float32
                if isinstance(number, float)
                else (torch.bool if isinstance(number, bool) else torch.int64)
            )
        return torch.full((), number, dtype=dtype, device=device)
    return torch.as_tensor(x, dtype=dtype, device=device)


def divide_no_nan(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where ``den == 0`` (with finite gradients)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


# ----------------------------------------------------------------------------------------------
# Shape and reduction helpers (keras/src/losses/loss.py)


def squeeze_or_expand_to_same_rank(x1: Tensor, x2: Tensor, expand_rank_1: bool = True) -> Tuple[Tensor, Tensor]:
    """Squeeze or expand the last axis when the ranks differ by exactly one (Keras's rule)."""
    r1, r2 = x1.dim(), x2.dim()
    if r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2.unsqueeze(-1)
        else:
            x1 = x1.squeeze(-1)
    if r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1.unsqueeze(-1)
        else:
            x2 = x2.squeeze(-1)
    return x1, x2


REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight")


def apply_mask(
    sample_weight: Optional[Tensor], mask: Optional[Tensor], dtype: torch.dtype, reduction: Any
) -> Optional[Tensor]:
    """Merge a Keras mask into the sample weights (``loss.apply_mask``)."""
    if mask is None:
        return sample_weight
    if reduction in ("mean", "sum_over_batch_size"):
        bool_mask = mask.to(torch.bool)
        valid = bool_mask.to(dtype).sum()  # may be 0
        empty = valid == 0
        weight = torch.where(
            empty, torch.zeros_like(valid), float(mask.numel()) / torch.where(empty, torch.ones_like(valid), valid)
        )
        float_mask = torch.where(bool_mask, weight, torch.zeros_like(weight))
    else:
        float_mask = mask.to(dtype)
    if sample_weight is None:
        return float_mask
    float_mask, sample_weight = squeeze_or_expand_to_same_rank(float_mask, sample_weight.to(dtype))
    return sample_weight * float_mask


def reduce_values(values: Tensor, sample_weight: Optional[Tensor], reduction: Any) -> Tensor:
    """Keras's ``reduce_values`` (values are already multiplied by the weights)."""
    if reduction is None or reduction == "none" or values.dim() == 0 or tuple(values.shape) == (0,):
        return values
    loss = values.sum()
    if reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight"):
        if reduction == "mean_with_sample_weight" and sample_weight is not None:
            loss = divide_no_nan(loss, sample_weight.sum().to(loss.dtype))
        else:  # the element count is known on the host: no device tensor needed
            count = values.numel()
            loss = loss / float(count) if count else torch.zeros_like(loss)
    return loss


def reduce_weighted_values(
    values: Tensor,
    sample_weight: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    reduction: Any = "sum_over_batch_size",
    dtype: Optional[torch.dtype] = None,
    broadcast_leading: bool = False,
) -> Tensor:
    """Keras's ``reduce_weighted_values``: weight, mask and reduce a per-sample loss tensor.

    ``broadcast_leading`` (used for torch losses only, which return element-wise values) lets a
    ``(B,)`` weight scale a ``(B, ...)`` loss along the leading axes; Keras itself would broadcast
    it against the trailing axis.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"Invalid value for argument `reduction`. Expected one of {REDUCTIONS}. Received: reduction={reduction!r}"
        )
    if dtype is not None:
        values = values.to(dtype)
    if sample_weight is not None:
        sample_weight = as_tensor(sample_weight, values, values.dtype).to(device=values.device, dtype=values.dtype)
    sample_weight = apply_mask(sample_weight, mask, values.dtype, reduction)
    if sample_weight is not None:
        sample_weight = sample_weight.to(values.dtype)
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        if broadcast_leading and 0 < sample_weight.dim() < values.dim():
            sample_weight = sample_weight.reshape(
                tuple(sample_weight.shape) + (1,) * (values.dim() - sample_weight.dim())
            )
        values = values * sample_weight
    return reduce_values(values, sample_weight, reduction)


# ----------------------------------------------------------------------------------------------
# Per-sample loss functions (keras/src/losses/losses.py). Same signatures as Keras's.


def _check_same_shape(target: Tensor, output: Tensor) -> None:
    if target.shape != output.shape:
        raise ValueError(
            "Arguments `target` and `output` must have the same shape. "
            f"Received: target.shape={tuple(target.shape)}, output.shape={tuple(output.shape)}"
        )


def like_tensors(y_true: Any, y_pred: Any) -> Tuple[Tensor, Tensor]:
    y_pred = as_tensor(y_pred)
    return as_tensor(y_true, y_pred).to(device=y_pred.device, dtype=y_pred.dtype), y_pred


def mean_squared_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    return torch.square(y_true - y_pred).mean(dim=-1)


def mean_absolute_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    return torch.abs(y_true - y_pred).mean(dim=-1)


def mean_absolute_percentage_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    diff = torch.abs((y_true - y_pred) / torch.clamp(torch.abs(y_true), min=epsilon()))
    return 100.0 * diff.mean(dim=-1)


def mean_squared_logarithmic_error(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    eps = epsilon()
    first = torch.log(torch.clamp(y_pred, min=eps) + 1.0)
    second = torch.log(torch.clamp(y_true, min=eps) + 1.0)
    return torch.square(first - second).mean(dim=-1)


def l2_normalize(x: Tensor, axis: int = -1) -> Tensor:
    """``keras.ops.normalize(x, order=2)``: ``x * min(rsqrt(sum(x^2)), 1/epsilon)``."""
    inv_norm = torch.rsqrt(torch.square(x).sum(dim=axis, keepdim=True))
    return x * torch.clamp(inv_norm, max=1.0 / epsilon())


def cosine_similarity(y_true: Tensor, y_pred: Tensor, axis: int = -1) -> Tensor:
    """The *loss* version: minus the cosine similarity."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    return -(l2_normalize(y_true, axis) * l2_normalize(y_pred, axis)).sum(dim=axis)


def huber(y_true: Tensor, y_pred: Tensor, delta: float = 1.0) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    delta = round_to(delta, y_pred.dtype)  # Keras makes delta a tensor of y_pred's dtype
    error = y_pred - y_true
    abs_error = torch.abs(error)
    quadratic = 0.5 * torch.square(error)
    linear = delta * abs_error - round_to(0.5 * round_to(delta * delta, y_pred.dtype), y_pred.dtype)
    return torch.where(abs_error <= delta, quadratic, linear).mean(dim=-1)


def log_cosh(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*like_tensors(y_true, y_pred))
    x = y_pred - y_true
    return (x + F.softplus(x * -2.0) - math.log(2.0)).mean(dim=-1)


def round_to(value: float, dtype: torch.dtype) -> float:
    """A Python float rounded to ``dtype``'s precision (host-side, no device tensor)."""
    if dtype == torch.float32:
        return float(numpy.float32(value))
    if dtype == torch.float16:
        return float(numpy.float16(value))
    return float(value)


def _binary_labels_to_hinge(y_true: Tensor) -> Tensor:
    """{0, 1} labels become {-1, 1}; other labels are kept (decided on device, no host sync)."""
    is_binary = torch.logical_or(y_true == 0, y_true == 1).all()
    return torch.where(is_binary, 2.0 * y_true - 1.0, y_true)


def hinge(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    y_true = _binary_labels_to_hinge(y_true)
    return torch.clamp(1.0 - y_true * y_pred, min=0.0).mean(dim=-1)


def squared_hinge(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    y_true = _binary_labels_to_hinge(y_true)
    return torch.square(torch.clamp(1.0 - y_true * y_pred, min=0.0)).mean(dim=-1)


def categorical_hinge(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    pos = (y_true * y_pred).sum(dim=-1)
    neg = ((1.0 - y_true) * y_pred).amax(dim=-1)
    return torch.clamp(neg - pos + 1.0, min=0.0)


def kl_divergence(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    eps = epsilon()
    y_true = torch.clamp(y_true, eps, 1.0)
    y_pred = torch.clamp(y_pred, eps, 1.0)
    return (y_true * torch.log(y_true / y_pred)).sum(dim=-1)


def poisson(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    return (y_pred - y_true * torch.log(y_pred + epsilon())).mean(dim=-1)


def _no_autocast(t: Tensor) -> Any:
    device_type = t.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def binary_crossentropy(
    y_true: Tensor, y_pred: Tensor, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1
) -> Tensor:
    y_true, y_pred = like_tensors(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    _check_same_shape(y_true, y_pred)
    with _no_autocast(y_pred):
        if from_logits:
            values = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
        else:
            eps = epsilon()
            values = F.binary_cross_entropy(torch.clamp(y_pred, eps, 1.0 - eps), y_true, reduction="none")
    return values.mean(dim=axis)


def raise_for_labels(y_true: Tensor, y_pred: Tensor, err: BaseException, loss: str) -> None:
    """Raise :class:`LabelRangeError` naming the first class label outside ``[0, classes)``, if there is one.

    Called only after a class-index loss failed (torch's own error names no sample), so a correct batch
    pays nothing for it.
    """
    classes = int(y_pred.shape[-1])
    target = as_tensor(y_true, y_pred).to(torch.long)
    if target.dim() == y_pred.dim() and target.shape[-1] == 1:
        target = target.squeeze(-1)
    bad = ((target < 0) | (target >= classes)).flatten().nonzero()
    if len(bad):
        index = int(bad[0])
        label = int(target.flatten()[index])
        per_sample = target[0].numel() if target.dim() > 1 else 1
        raise LabelRangeError(label, classes, index // per_sample, loss) from err


# ----------------------------------------------------------------------------------------------
# Registry: Keras function object -> native torch function


_NATIVE: Optional[Dict[Callable, Callable]] = None


def native_losses() -> Dict[Callable, Callable]:
    """Map each Keras loss function (the function objects in ``keras.losses``) to its torch twin.

    A twin is kept where Keras's own function costs more than 1.25x it, forward and backward, on the
    shapes of ``bench/run.py`` (``python bench/losses.py`` measures it: 1.3x to 2.7x for these), or needs
    a host sync (``hinge`` and ``squared_hinge``: Keras converts {0, 1} labels under ``ops.cond``).
    ``categorical_crossentropy`` and ``sparse_categorical_crossentropy`` cost Keras 1.2x and 1.1x: Keras's own
    functions run.
    """
    global _NATIVE
    if _NATIVE is None:
        kl = import_keras().losses
        table: Dict[Callable, Callable] = {}
        for fn in (
            mean_squared_error, mean_absolute_error, mean_absolute_percentage_error,
            mean_squared_logarithmic_error, cosine_similarity, huber, log_cosh, hinge, squared_hinge,
            categorical_hinge, kl_divergence, poisson, binary_crossentropy,
        ):  # fmt: skip
            table[getattr(kl, fn.__name__)] = fn
        _NATIVE = table
    return _NATIVE


def native_loss_for(keras_fn: Any) -> Optional[Callable]:
    """The torch twin of a Keras loss function, or None."""
    try:
        return native_losses().get(keras_fn)
    except TypeError:  # unhashable
        return None
