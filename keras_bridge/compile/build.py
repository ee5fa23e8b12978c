"""The lazy half of ``compile()``: a :class:`~keras_bridge.KerasModule`'s losses, metrics and trackers from one batch.

Keras builds its compiled loss and metrics when the first batch arrives, from the outputs' structure;
:func:`build_from_batch` does the same (it is ``KerasModule.build_from_batch``). A new ``compile()``
forgets the build, and the next batch builds again.

Example:
    >>> import torch
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    >>> x, y = torch.ones(4, 3), torch.zeros(4, 1)
    >>> module.build_from_batch(x, y, module(x))
    >>> module.built, module.output_names
    (True, ['output'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from keras_bridge.compile.structure import flatten_outputs, flatten_targets, output_structure
from keras_bridge.compile.tracking import StageTracker
from keras_bridge.optimizers.keras_native import KerasNativeSpec
from keras_bridge.typing import TensorTree

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

__all__ = ["build_from_batch"]


def build_from_batch(module: BridgeModule, x: TensorTree, y: TensorTree, y_pred: TensorTree) -> None:
    """Resolve the output structure and instantiate losses/metrics from one batch (Keras's lazy build).

    The outputs may be any nesting of lists, tuples, namedtuples and dicts (Keras's rules, see
    :mod:`keras_bridge.compile.structure`). A Keras model whose class overrides ``compute_loss`` or
    ``compute_metrics`` gets them called at every step, as Keras's ``train_step`` calls them.
    """
    module.require_compiled()
    if module.keras_step is not None:
        module.train_tracker, module.eval_tracker = module.keras_step.train_logs, module.keras_step.eval_logs
        return
    assert module.loss_plan is not None and module.metric_plan is not None
    outputs = output_structure(y_pred, module.declared_output_names)
    module.output_kind = outputs.kind
    module.output_names = outputs.names
    module.loss_plan.build(outputs)
    hooks = None
    if module.is_keras:
        # Keras's own logs need the model compiled by Keras with every argument (a Keras optimizer).
        keras_logs = isinstance(module.optimizer_spec, KerasNativeSpec) and not module.keras_incompatible_arguments
        hooks = StageTracker.keras_hooks(module.model, keras_logs)
    yp_flat = flatten_outputs(y_pred, outputs)
    try:
        y_flat = flatten_targets(y, outputs, with_loss=module.loss_plan.output_has_loss)
    except ValueError:
        # A model whose compute_loss gives the loss and Keras's logs may take targets shaped for its
        # override rather than for its outputs, as in Keras: the bridge's plans never read them.
        if hooks is None or not (hooks.loss and hooks.keras_logs):
            raise
    else:
        detached = [t.detach() if isinstance(t, torch.Tensor) else t for t in yp_flat]
        module.metric_plan.build(outputs, y_flat, detached)
    device = yp_flat[0].device if yp_flat and isinstance(yp_flat[0], torch.Tensor) else None
    module.train_tracker = StageTracker(module.loss_plan, module.metric_plan, clone=False, hooks=hooks)
    module.eval_tracker = StageTracker(module.loss_plan, module.metric_plan, clone=True, hooks=hooks)
    if device is not None:
        module.train_tracker.to(device)
        module.eval_tracker.to(device)
