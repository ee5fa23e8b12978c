"""``train_on_batch`` / ``test_on_batch`` / ``predict_on_batch``: one batch, Keras's return values.

A Keras model whose Keras compile holds everything it trains with (its own steps, or the bridge's
compile with Keras losses, metrics and optimizer) runs Keras's own method: the same step, optimizer
object and metrics as ``fit``. Otherwise (a torch module, torch losses or torchmetrics) the batch is
one ``fit`` / ``evaluate`` / ``predict`` step of the bridge's, without History or progress bar.

Example:
    >>> import numpy as np, torch, keras_bridge as kb
    >>> module = kb.KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    >>> sorted(module.train_on_batch(np.ones((4, 3)), np.zeros((4, 1)), return_dict=True))
    ['loss', 'mae']
    >>> module.predict_on_batch(np.ones((2, 3))).shape
    (2, 1)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

from keras_bridge.optimizers.keras_native import KerasNativeSpec
from keras_bridge.typing import ArrayTree
from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule


def _keras(module: BridgeModule) -> Any:
    return module.model  # a keras.Model: Any to the type checker


def _keras_runs_it(module: BridgeModule) -> bool:
    if not module.is_keras:
        return False
    if module.keras_step is not None:
        return True
    return isinstance(module.optimizer_spec, KerasNativeSpec) and not module.keras_incompatible_arguments


def _num_samples(x: ArrayTree) -> int:
    leaves = [v for v in import_keras().tree.flatten(x) if hasattr(v, "shape")]
    if not leaves:
        raise ValueError(f"Expected `x` to hold arrays or tensors. Received: x of type {type(x).__name__}")
    return int(leaves[0].shape[0])


def train_on_batch(module: BridgeModule, x: ArrayTree, y: ArrayTree = None, sample_weight: ArrayTree = None,
                   class_weight: Optional[Mapping[int, float]] = None, return_dict: bool = False) -> Any:  # fmt: skip
    """Keras ``Model.train_on_batch``: one update on ``(x, y)``; the logs of that batch (metrics reset first).

    Returns:
        A scalar loss, a list in Keras's order, or (``return_dict``) a dict.
    """
    module.require_compiled()
    if _keras_runs_it(module):
        return _keras(module).train_on_batch(
            x, y, sample_weight=sample_weight, class_weight=class_weight, return_dict=return_dict
        )
    saved = module.history
    try:
        history = module.fit(x, y, batch_size=_num_samples(x), epochs=1, verbose=0, shuffle=False,
                             sample_weight=sample_weight, class_weight=class_weight)  # fmt: skip
    finally:
        module.history = saved
    logs = {k: v[-1] for k, v in history.history.items()}
    return logs if return_dict else module.ordered_results(logs)


def test_on_batch(
    module: BridgeModule, x: ArrayTree, y: ArrayTree = None, sample_weight: ArrayTree = None, return_dict: bool = False
) -> Any:
    """Keras ``Model.test_on_batch``: the loss and metrics of one batch (metrics reset first)."""
    module.require_compiled()
    if _keras_runs_it(module):
        return _keras(module).test_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict)
    return module.evaluate(x, y, batch_size=_num_samples(x), sample_weight=sample_weight, verbose=0,
                           return_dict=return_dict)  # fmt: skip


def predict_on_batch(module: BridgeModule, x: ArrayTree) -> Any:
    """Keras ``Model.predict_on_batch``: the model's outputs for one batch, as NumPy arrays."""
    if module.is_keras and (module.keras_step is not None or not module.compiled):
        return _keras(module).predict_on_batch(x)
    return module.predict(x, batch_size=_num_samples(x), verbose=0)
