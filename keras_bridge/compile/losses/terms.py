"""Resolve a ``loss=`` identifier into a :class:`LossTerm`: one output's loss, computed like Keras.

``get_loss(identifier)`` accepts what Keras's ``compile(loss=...)`` accepts for one output (a string,
a ``keras.losses.Loss`` object or class, a Keras loss function, a config dict, a plain callable
``fn(y_true, y_pred)``) plus torch losses (an ``nn.Module`` such as ``nn.CrossEntropyLoss()`` or a
``torch.nn.functional`` loss), and returns a callable ``term(y_true, y_pred, sample_weight=None)``
giving the scalar that Keras's ``Loss.__call__`` would give, differentiably.

Keras's built-in losses run as native torch code (:mod:`keras_bridge.compile.losses.functional`); any other
Keras loss runs through its own ``.call`` (Keras ops take torch tensors on the torch backend).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import keras_bridge.compile.losses.functional as L
from keras_bridge.utils.compat import (
    is_keras_builtin_loss,
    keras_loss_function_wrapper,
    keras_registry_names,
    keras_wrapped_function,
)
from keras_bridge.utils.errors import did_you_mean
from keras_bridge.utils.keras import import_keras, is_keras_model, is_keras_object

__all__ = ["LossTerm", "get_loss", "is_binary_or_sparse_categorical"]

_AUTO_CE = ("crossentropy", "ce")
_NOT_USABLE = ("Loss", "LossFunctionWrapper")  # in Keras's dict, but not losses by themselves
# torch losses that take class indices as targets
_INDEX_TARGET_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss, nn.MultiLabelMarginLoss)
_INDEX_TARGET_FUNCTIONS = (F.cross_entropy, F.nll_loss, F.multi_margin_loss, F.multilabel_margin_loss)
_TORCH_TO_KERAS_REDUCTION = {"mean": "sum_over_batch_size", "sum": "sum", "none": "none", "batchmean": "batchmean"}


def is_binary_or_sparse_categorical(y_true: torch.Tensor, y_pred: torch.Tensor) -> tuple:
    """Keras's shape rule behind "accuracy"/"crossentropy": ``(is_binary, is_sparse_categorical)``."""
    t_shape, p_shape = tuple(y_true.shape), tuple(y_pred.shape)
    is_binary = p_shape[-1] == 1
    is_sparse = len(t_shape) < len(p_shape) or (t_shape[-1] == 1 and p_shape[-1] > 1)
    return is_binary, is_sparse


class LossTerm:
    """One resolved loss: ``term(y_true, y_pred, sample_weight=None) -> scalar tensor``.

    Attributes:
        name: Keras's name for the loss (a string identifier keeps the string, a ``Loss`` object its
            ``.name``, a function ``snake_case(__name__)``, a torch module ``snake_case`` of its class).
        reduction: the Keras reduction applied to the per-sample values.
        identifier: what the user passed.
    """

    name: str
    reduction: Any = "sum_over_batch_size"
    #: Whether it can be given a structure of outputs (Keras passes one to a loss placed on a structure).
    takes_structures = False

    def __init__(self, name: str, identifier: Any) -> None:
        self.name = name
        self.identifier = identifier

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} reduction={self.reduction!r}>"


class KerasLossTerm(LossTerm):
    """A Keras ``Loss`` object, called as Keras's ``compile`` calls it.

    Args:
        name: Keras's name for the loss.
        identifier: what the user passed.
        keras_loss: the Keras ``Loss`` object (a function comes wrapped in Keras's ``LossFunctionWrapper``,
            as Keras's ``compile`` wraps it).

    A loss whose class overrides ``__call__``, and a loss on a structure of outputs, are called as they
    are: ``keras_loss(y_true, y_pred, sample_weight)``. Otherwise the per-sample values come from the
    loss's own ``call`` (or its wrapped function), or from its torch twin where
    :mod:`~keras_bridge.compile.losses.functional` keeps one, and are masked, weighted and reduced by
    :func:`~keras_bridge.compile.losses.functional.reduce_weighted_values`: Keras's ``Loss.__call__``
    does the same work at about three times the cost per step (the conversions and name scope of
    every call).
    """

    def __init__(self, name: str, identifier: Any, keras_loss: Any) -> None:
        super().__init__(name, identifier)
        keras = import_keras()
        reduction = keras_loss.reduction
        if reduction not in L.REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `reduction`. Expected one of {L.REDUCTIONS}. "
                f"Received: reduction={reduction!r}"
            )
        self.keras_loss, self.reduction = keras_loss, reduction
        self.dtype = L.torch_dtype(keras_loss.dtype) if keras_loss.dtype is not None else L.floatx()
        self.keras_call = type(keras_loss).__call__ is not keras.losses.Loss.__call__
        wrapped = keras_wrapped_function(keras_loss)
        # Keras's own losses take tensors; a user's loss function or class may take a structure.
        self.takes_structures = self.keras_call or not is_keras_builtin_loss(
            wrapped[0] if wrapped is not None else keras_loss
        )
        self.fn: Callable = keras_loss.call
        self.kwargs: Dict[str, Any] = {}
        self.wrap, self.keras_ops = False, True
        if wrapped is not None:
            native = L.native_loss_for(wrapped[0])
            self.fn, self.kwargs, self.wrap = native or wrapped[0], wrapped[1], True
            self.keras_ops = native is None

    @property
    def is_native(self) -> bool:
        """True when the loss runs as native torch code (no Keras ops)."""
        return not self.keras_ops and not self.keras_call

    def __call__(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, sample_weight: Optional[torch.Tensor] = None
    ) -> Tensor:
        if self.keras_call or import_keras().tree.is_nested(y_pred):
            first = import_keras().tree.flatten(y_pred)[0]
            with L.keras_device(first):
                return self.keras_loss(y_true, y_pred, sample_weight=sample_weight)
        y_pred_t = L.as_tensor(y_pred)
        in_mask = L.get_mask(y_pred)
        yp = y_pred_t.to(self.dtype)
        yt = L.as_tensor(y_true, yp).to(device=yp.device, dtype=self.dtype)
        if self.wrap:
            yt, yp = L.squeeze_or_expand_to_same_rank(yt, yp)
        try:
            if self.keras_ops:
                with L.keras_device(yp):
                    values = self.fn(yt, yp, **self.kwargs)
            else:
                values = self.fn(yt, yp, **self.kwargs)
        except (IndexError, RuntimeError) as err:
            if self.fn is import_keras().losses.sparse_categorical_crossentropy:
                L.raise_for_labels(yt, yp, err, "sparse_categorical_crossentropy")
            raise
        out_mask = L.get_mask(values)
        mask: Optional[Tensor]
        if in_mask is not None and out_mask is not None:
            mask = in_mask.to(torch.bool) & out_mask.to(torch.bool)
        else:
            mask = in_mask if in_mask is not None else out_mask
        return L.reduce_weighted_values(values, sample_weight, mask, self.reduction, self.dtype)


class AutoCrossentropy(LossTerm):
    """``"crossentropy"``/``"ce"``: binary, sparse or categorical crossentropy, chosen from the first batch's shapes."""

    def __init__(self, name: str) -> None:
        super().__init__(name, name)
        self.resolved: Optional[KerasLossTerm] = None

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        if self.resolved is None:
            is_binary, is_sparse = is_binary_or_sparse_categorical(y_true, y_pred)
            kind = "binary" if is_binary else ("sparse_categorical" if is_sparse else "categorical")
            fn = getattr(import_keras().losses, f"{kind}_crossentropy")
            self.resolved = KerasLossTerm(self.name, self.identifier, keras_loss_function_wrapper(fn, self.name))
        return self.resolved(y_true, y_pred, sample_weight)


class TorchLossTerm(LossTerm):
    """A torch loss (module or ``torch.nn.functional`` function) called as ``loss(input=y_pred, target=y_true)``.

    It is evaluated with ``reduction="none"`` and the per-element values are weighted and reduced the
    Keras way, using the loss's own reduction mapped to Keras's ("mean" -> "sum_over_batch_size",
    "sum" -> "sum", "none" -> "none", "batchmean" -> sum / batch size). A ``(B,)`` sample weight scales
    element-wise ``(B, ...)`` values along the batch axis. For class-index losses (cross_entropy,
    nll_loss) with "mean", the divisor is torch's own (sum of the class weights of the non-ignored
    targets), so without sample weights the value equals torch's.
    """

    def __init__(self, name: str, loss: Callable, reduction: str) -> None:
        super().__init__(name, loss)
        self.loss = loss
        self.torch_reduction = reduction
        self.reduction = _TORCH_TO_KERAS_REDUCTION.get(reduction, reduction)
        self.is_module = isinstance(loss, nn.Module)
        self.takes_reduction = (self.is_module and hasattr(loss, "reduction")) or (
            not self.is_module and _accepts(loss, "reduction"))  # fmt: skip
        self.index_targets = isinstance(loss, _INDEX_TARGET_MODULES) or any(loss is f for f in _INDEX_TARGET_FUNCTIONS)

    def _evaluate(self, target: Tensor, output: Tensor) -> Tensor:
        if not self.takes_reduction:
            return self.loss(output, target)
        if not self.is_module:
            return self.loss(output, target, reduction="none")
        module = cast(Any, self.loss)  # a torch loss module with a `reduction` attribute
        for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if t.device != output.device:
                module.to(output.device)
                break
        saved = module.reduction
        module.reduction = "none"
        try:
            return module(output, target)
        finally:
            module.reduction = saved

    def _index_divisor(self, target: Tensor, output: Tensor) -> Optional[Tensor]:
        """Torch's "mean" divisor for class-index targets: Σ weight[target] over non-ignored targets."""
        if self.torch_reduction != "mean" or not self.index_targets or target.is_floating_point():
            return None
        ignore_index = getattr(self.loss, "ignore_index", -100)
        weight = getattr(self.loss, "weight", None)
        keep = target != ignore_index
        if weight is None:
            counts = keep.to(output.dtype)
        else:
            safe = torch.where(keep, target, torch.zeros_like(target))
            counts = weight.to(device=output.device, dtype=output.dtype)[safe] * keep
        return counts

    def __call__(self, y_true: Tensor, y_pred: Tensor, sample_weight: Optional[Tensor] = None) -> Tensor:
        output = L.as_tensor(y_pred)
        target = L.as_tensor(y_true, output).to(output.device)
        target, output = L.squeeze_or_expand_to_same_rank(target, output)
        if self.index_targets:
            if target.dim() == output.dim() and target.shape[-1] == 1 and not target.is_floating_point():
                target = target.squeeze(-1)
            if target.is_floating_point() and target.dim() == output.dim() - 1:
                target = target.to(torch.long)
            elif target.is_floating_point():
                target = target.to(output.dtype)
        elif target.dtype != output.dtype:
            target = target.to(output.dtype)
        values = self._evaluate(target, output)
        divisor = self._index_divisor(target, output)
        if divisor is not None:
            values = values if sample_weight is None else L.reduce_weighted_values(
                values, sample_weight, None, "none", broadcast_leading=True)  # fmt: skip
            return L.divide_no_nan(values.sum(), divisor.sum())
        if self.reduction == "batchmean":
            summed = L.reduce_weighted_values(values, sample_weight, None, "sum", broadcast_leading=True)
            return summed / max(int(values.shape[0]) if values.dim() else 1, 1)
        return L.reduce_weighted_values(values, sample_weight, None, self.reduction, broadcast_leading=True)


def _accepts(fn: Callable, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _is_torch_functional(obj: object) -> bool:
    if not callable(obj) or getattr(obj, "__module__", None) != "torch.nn.functional":
        return False
    return getattr(F, getattr(obj, "__name__", ""), None) is obj


def _accepted_text() -> str:
    names = _keras_loss_names()
    return (
        f"a string ({', '.join(repr(n) for n in names + list(_AUTO_CE))}), a `keras.losses.Loss` instance or "
        "class, a Keras loss function, a Keras config dict, a callable `fn(y_true, y_pred)` returning per-sample "
        "values, or a torch loss (`torch.nn.Module` such as `torch.nn.CrossEntropyLoss()`, or a "
        "`torch.nn.functional` loss such as `torch.nn.functional.mse_loss`)"
    )


def _keras_loss_names() -> list:
    return sorted(n for n in keras_registry_names("losses") if n not in _NOT_USABLE)


def _from_keras_object(obj: Any, name: str, identifier: Any) -> KerasLossTerm:
    """A Keras ``Loss`` instance or a Keras/plain loss function (wrapped as Keras wraps it) as a term."""
    if not isinstance(obj, import_keras().losses.Loss):
        obj = keras_loss_function_wrapper(obj, name)
    return KerasLossTerm(name, identifier, obj)


def _instantiate(loss_class: type) -> Any:
    try:
        return loss_class()
    except Exception as err:
        raise TypeError(
            f"Invalid `loss` argument: could not instantiate {loss_class!r} without arguments ({err}); "
            "pass an instance."
        ) from err


def get_loss(identifier: Any) -> LossTerm:
    """Resolve one output's ``loss`` identifier into a :class:`LossTerm` (see the module docstring).

    Raises:
        ValueError: ``None``, an unknown string, or a Keras config dict Keras cannot deserialize.
        TypeError: an object that is not a loss.
    """
    if identifier is None:
        raise ValueError("Invalid `loss` argument: None. Outputs without a loss must be skipped by the caller.")
    # A torch loss needs nothing from Keras: a torch-module fit with torch losses never imports keras
    # (about 130 MB of resident memory). A Keras object can only exist once keras is loaded.
    if not is_keras_object(identifier, "losses.Loss"):
        if isinstance(identifier, nn.Module) and not is_keras_model(identifier):
            reduction = getattr(identifier, "reduction", "mean")
            return TorchLossTerm(L.object_name(identifier), identifier, reduction)
        if _is_torch_functional(identifier):
            return TorchLossTerm(L.object_name(identifier), identifier, "mean")
        if inspect.isclass(identifier) and issubclass(identifier, nn.Module):
            return get_loss(_instantiate(identifier))
    keras = import_keras()
    if isinstance(identifier, str):
        if identifier.lower() in _AUTO_CE:
            return AutoCrossentropy(identifier)
        if identifier in _NOT_USABLE or identifier not in _keras_loss_names():
            hint = did_you_mean(identifier, _keras_loss_names())
            raise ValueError(
                f"Invalid `loss` argument: unknown loss identifier {identifier!r}.{hint} Accepted: {_accepted_text()}."
            )
        obj = keras.losses.get(identifier)
        name = obj.name if isinstance(obj, keras.losses.Loss) else identifier
        return _from_keras_object(obj, name, identifier)
    if isinstance(identifier, dict):
        try:
            obj = keras.losses.get(identifier)
        except Exception as err:
            raise ValueError(f"Invalid `loss` argument: cannot deserialize config {identifier!r}: {err}") from err
        return _from_keras_object(obj, L.object_name(obj), identifier)
    if inspect.isclass(identifier):
        if issubclass(identifier, keras.losses.Loss):
            return get_loss(_instantiate(identifier))
        raise TypeError(
            f"Invalid `loss` argument: {identifier!r} is a class, not a loss. Accepted: {_accepted_text()}."
        )
    if isinstance(identifier, keras.losses.Loss):
        return _from_keras_object(identifier, identifier.name, identifier)
    if callable(identifier):
        return _from_keras_object(identifier, L.object_name(identifier), identifier)
    raise TypeError(
        f"Invalid `loss` argument: {identifier!r} (of type {type(identifier).__name__}) is not a loss. "
        f"Accepted: {_accepted_text()}."
    )
