"""Torch twins of the Keras metric functions that Keras's own cost too much per step, and of the ``Mean`` reduction.

Each twin reproduces the Keras function of the same name (the accuracy family, the metric's cosine
similarity, ``reduce_to_samplewise_values``) with torch ops and no host synchronisation. It is kept
because Keras's own function costs 2x to 5x it per batch on the shapes of ``bench/run.py``
(``python bench/losses.py``); every other metric function runs as Keras's own.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import Tensor

import keras_bridge.compile.losses.functional as L
from keras_bridge.compile.losses.functional import as_tensor, squeeze_or_expand_to_same_rank
from keras_bridge.utils.compat import keras_wrapped_function
from keras_bridge.utils.keras import import_keras


def reduce_to_samplewise_values(
    values: Tensor, sample_weight: Union[Tensor, float, None], dtype: torch.dtype, mask: Optional[Tensor] = None
) -> Tuple[Tensor, Optional[Tensor]]:
    """Keras's ``reduce_to_samplewise_values`` with ``reduce_fn=mean``: one value (and weight) per sample."""
    values = as_tensor(values).to(dtype)
    if sample_weight is not None:
        sample_weight = as_tensor(sample_weight, values, dtype).to(device=values.device, dtype=dtype)
        if mask is not None:
            sample_weight = L.apply_mask(sample_weight, mask, dtype, "sum")
        assert sample_weight is not None
        values, sample_weight = squeeze_or_expand_to_same_rank(values, sample_weight)
        w_ndim, v_ndim = sample_weight.dim(), values.dim()
        if v_ndim > w_ndim:
            values = values.mean(dim=tuple(range(w_ndim, v_ndim)))
        sample_weight = torch.broadcast_to(sample_weight, values.shape)
        values = values * sample_weight
        if w_ndim > 1:
            sample_weight = sample_weight.mean(dim=tuple(range(1, w_ndim)))
    if values.dim() > 1:
        values = values.mean(dim=tuple(range(1, values.dim())))
    return values, sample_weight


# ----------------------------------------------------------------------------------------------
# Accuracy family (same signatures as Keras's functions)


def _floatx_of(matches: Tensor) -> Tensor:
    return matches.to(L.floatx())


def accuracy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_true, y_pred = squeeze_or_expand_to_same_rank(*L.like_tensors(y_true, y_pred))
    return _floatx_of(y_true == y_pred)


def binary_accuracy(y_true: Tensor, y_pred: Tensor, threshold: float = 0.5) -> Tensor:
    y_pred = as_tensor(y_pred)
    y_true = as_tensor(y_true, y_pred).to(y_pred.device)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    threshold = L.round_to(threshold, L.floatx())  # Keras compares with a floatx tensor
    predicted = (y_pred > threshold).to(y_true.dtype)
    return _floatx_of(y_true == predicted)


def categorical_accuracy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_pred = as_tensor(y_pred)
    labels = torch.argmax(as_tensor(y_true, y_pred).to(y_pred.device), dim=-1)
    original_shape = labels.shape
    reshape = labels.dim() == y_pred.dim()
    if reshape:
        labels = labels.squeeze(-1)
    matches = _floatx_of(labels == torch.argmax(y_pred, dim=-1))
    return matches.reshape(original_shape) if reshape else matches


def sparse_categorical_accuracy(y_true: Tensor, y_pred: Tensor) -> Tensor:
    y_pred = as_tensor(y_pred)
    y_true = as_tensor(y_true, y_pred).to(device=y_pred.device, dtype=y_pred.dtype)
    original_shape = y_true.shape
    reshape = y_true.dim() == y_pred.dim() and y_true.shape[-1] == 1
    if reshape:
        y_true = y_true.squeeze(-1)
    predicted = torch.argmax(y_pred, dim=-1).to(y_true.dtype)
    matches = _floatx_of(y_true == predicted)
    if reshape:
        matches = matches.reshape(original_shape)
    if matches.dim() > 1 and matches.shape[-1] == 1:
        matches = matches.squeeze(-1)
    return matches


def _in_top_k(targets: Tensor, predictions: Tensor, k: int) -> Tensor:
    kth = torch.topk(predictions, k, dim=-1).values[:, -1]
    target_values = torch.take_along_dim(predictions, targets.to(torch.long)[:, None], dim=-1)[:, 0]
    return target_values >= kth


def _top_k_matches(labels: Tensor, y_pred: Tensor, hits: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    # Keras flattens leading dimensions to (N, classes), scores, and restores the label shape.
    original_shape = labels.shape
    if y_pred.dim() > 2:
        y_pred = y_pred.reshape(-1, y_pred.shape[-1])
    reshape = labels.dim() > 1
    if reshape:
        labels = labels.reshape(-1)
    matches = _floatx_of(hits(labels, y_pred))
    return matches.reshape(original_shape) if reshape else matches


def top_k_categorical_accuracy(y_true: Tensor, y_pred: Tensor, k: int = 5) -> Tensor:
    y_pred = as_tensor(y_pred)
    labels = torch.argmax(as_tensor(y_true, y_pred).to(device=y_pred.device, dtype=y_pred.dtype), dim=-1)
    return _top_k_matches(labels, y_pred, lambda t, p: _in_top_k(t, p, k))


def sparse_top_k_categorical_accuracy(
    y_true: Tensor, y_pred: Tensor, k: int = 5, from_sorted_ids: bool = False
) -> Tensor:
    y_pred = as_tensor(y_pred)
    labels = as_tensor(y_true, y_pred).to(device=y_pred.device, dtype=y_pred.dtype if from_sorted_ids else torch.int32)
    if from_sorted_ids:
        return _top_k_matches(labels, y_pred, lambda t, p: (t[:, None] == p[:, :k]).any(dim=1))
    return _top_k_matches(labels, y_pred, lambda t, p: _in_top_k(t, p, k))


def cosine_similarity_metric(y_true: Tensor, y_pred: Tensor, axis: int = -1) -> Tensor:
    """The *metric* version (``keras.metrics.CosineSimilarity``): plus the cosine similarity."""
    return -L.cosine_similarity(y_true, y_pred, axis=axis)


_NATIVE: Optional[Dict[Callable, Callable]] = None


def native_metrics() -> Dict[Callable, Callable]:
    """Map Keras metric functions (``MeanMetricWrapper._fn`` objects) to their torch twins."""
    global _NATIVE
    if _NATIVE is None:
        keras = import_keras()
        table = dict(L.native_losses())
        for fn in (
            binary_accuracy, categorical_accuracy, sparse_categorical_accuracy,
            top_k_categorical_accuracy, sparse_top_k_categorical_accuracy,
        ):  # fmt: skip
            table[getattr(keras.metrics, fn.__name__)] = fn
        for metric, twin in (
            (keras.metrics.Accuracy(), accuracy),
            (keras.metrics.CosineSimilarity(), cosine_similarity_metric),
        ):
            wrapped = keras_wrapped_function(metric)
            if wrapped is not None:
                table[wrapped[0]] = twin
        _NATIVE = table
    return _NATIVE


def native_metric_for(keras_fn: Any) -> Optional[Callable]:
    """The torch twin of a Keras metric function, or None."""
    try:
        return native_metrics().get(keras_fn)
    except TypeError:
        return None
