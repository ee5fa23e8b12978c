"""A :class:`~keras_bridge.KerasModule`'s step: Keras's ``compute_loss`` then ``update_metrics`` on one batch.

The functions here are bound as ``KerasModule`` methods (``compute_loss``, ``update_metrics`` and the step the
Lightning hooks and the fused step call), so a subclass overrides ``compute_loss`` / ``update_metrics`` as in
Keras. The batch in flight is kept on the module: the captured forward's own losses (``forward_losses``), the
per-output losses the trackers log (``output_losses``) and the inputs a Keras model's ``compute_metrics`` reads
(``step_inputs``).

Example:
    >>> import torch, numpy as np
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse")
    >>> _ = module.fit(np.ones((4, 3)), np.zeros((4, 1)), verbose=0)  # the first batch builds the loss plan
    >>> loss = module.compute_loss(y=torch.zeros(2, 1), y_pred=torch.ones(2, 1))
    >>> float(loss)
    1.0
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from keras_bridge.compile.loss_plan import add_model_losses
from keras_bridge.compile.structure import flatten_outputs, resolve_output_names
from keras_bridge.data.distributed import split_batch_info
from keras_bridge.typing import TensorTree
from keras_bridge.utils.tree import first_batch_dim, unpack_x_y_sample_weight

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

Tensor = torch.Tensor


def compute_loss(module: BridgeModule, x: TensorTree = None, y: TensorTree = None, y_pred: TensorTree = None,
                 sample_weight: TensorTree = None, training: bool = True) -> Tensor:  # fmt: skip
    """Keras's ``compute_loss``: the compiled losses, weighted and summed, plus the model's own losses.

    Override it in a subclass as in Keras (``x`` is given for losses that need the inputs). A Keras
    model whose class overrides ``compute_loss`` gives the loss itself (its override runs here).

    Raises:
        ValueError: no compiled loss and no model losses.
    """
    plan = module.loss_plan
    assert plan is not None
    hooks = module.train_tracker.hooks if module.train_tracker is not None else None
    if hooks is not None and hooks.runs_keras_loss:
        loss = hooks.compute_loss(x, y, y_pred, sample_weight, training)
        if plan.tracker_names and not hooks.keras_logs:
            with torch.no_grad():  # the per-output values the bridge's own trackers log
                module.output_losses = plan(*plan.flatten_batch(y, y_pred, sample_weight))[1]
        return loss
    total, module.output_losses = plan(*plan.flatten_batch(y, y_pred, sample_weight))
    if module.run_regularizers:
        own_losses = module.model.losses if module.captured_forward is None else module.forward_losses
        total = add_model_losses(total, own_losses)  # type: ignore[arg-type]
    if total is None:
        raise ValueError(
            "No loss to compute. Provide a `loss` argument in `compile()` (or give the model "
            "regularization / add_loss losses)."
        )
    return total


def update_metrics(module: BridgeModule, y: TensorTree, y_pred: TensorTree, sample_weight: TensorTree, loss: Tensor,
                   batch_size: int, training: bool = True) -> None:  # fmt: skip
    """Add one batch to the stage's loss trackers and compiled metrics (Keras's ``update_state``).

    For a Keras model that overrides ``compute_loss`` or ``compute_metrics``, the model's
    ``compute_metrics`` runs too and its return value gives the logs, as in Keras's ``train_step``.
    """
    tracker, plan = (module.train_tracker if training else module.eval_tracker), module.loss_plan
    assert tracker is not None and plan is not None
    tracker.update_losses(loss, module.output_losses, batch_size)
    hooks = tracker.hooks
    if hooks is not None and hooks.runs_keras_metrics:
        tracker.update_keras_logs(module.step_inputs, y, y_pred, sample_weight, loss, batch_size)
        if hooks.keras_logs:
            return
    tracker.update_metrics(*plan.flatten_batch(y, y_pred, sample_weight))


def step(module: BridgeModule, batch: object, training: bool) -> Tensor:
    """One batch of training or evaluation: forward, ``compute_loss``, ``update_metrics``; the loss to minimise.

    None (when training) for a model without trainable weights: Keras skips the update and warns once.
    """
    batch, info = split_batch_info(batch)
    x, y, sw = unpack_x_y_sample_weight(batch)
    y_pred = module(x, training=training)
    batch_size = first_batch_dim(x)
    if batch_size == 0:
        # An empty DDP shard still joins the gradient all-reduce, with zero gradients.
        outputs = flatten_outputs(y_pred, resolve_output_names(y_pred, module.output_names))
        return torch.stack([t.sum() for t in outputs]).sum() * 0.0
    if not module.built:
        module.build_from_batch(x, y, y_pred)
    module.output_losses = []
    module.step_inputs = x  # for a Keras model's compute_metrics, called from update_metrics
    total = module.compute_loss(x, y, y_pred, sw, training=training)
    module.update_metrics(y, y_pred, sw, total, batch_size, training=training)
    module.step_inputs = None
    if info is not None and training:
        total = total * (info.world_size * batch_size / info.global_size)
    if training and not total.requires_grad:  # no trainable weights: Keras skips the update and says so
        if not module.warned_untrainable:
            module.warned_untrainable = True
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return None  # type: ignore[return-value]
    return total
