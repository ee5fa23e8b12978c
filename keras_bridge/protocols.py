"""The structural types the bridge's helper modules are written against.

:class:`~keras_bridge.KerasModule` is assembled from helper modules (compile resolution, build, the
optimizer, logs, saving, the trainer's ``fit``), and each helper takes the module as an argument.
Importing the class itself in those helpers, even only for type checking, would point a dependency
back up at the module that imports them. They are typed against the protocols here instead, which
import nothing of the bridge's: :class:`CallbackHost` (what the Keras-callback driver and the savers
read) and :class:`BridgeModule` (what the helpers of ``KerasModule`` read and set). A ``KerasModule``
satisfies both, which the type checker verifies wherever one is passed in.

Example:
    >>> import torch
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> all(hasattr(module, name) for name in ("batch_logs", "finish_train_epoch", "get_weights"))
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, MutableMapping, Optional, Protocol

import numpy as np
from torch import Tensor, nn

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["BridgeModule", "CallbackHost"]


class CallbackHost(Protocol):
    """What :class:`~keras_bridge.callbacks.KerasCallbackDriver` reads from the module it serves.

    ``is_keras`` and ``model`` (the network whose weights are saved and broadcast) are what the
    bridge's savers read; ``history`` receives the run's ``History``.
    """

    is_keras: bool
    model: Any
    history: Any
    compiled: bool
    declared_output_names: Optional[List[str]]
    input_names: Optional[List[str]]

    @property
    def callback_model(self) -> Any:
        """What a Keras callback sees as ``self.model``."""

    def batch_logs(self, training: bool = True) -> Dict[str, float]:
        """Keras's batch-end logs."""

    def finish_train_epoch(self) -> Dict[str, float]:
        """Keras's epoch-end logs (training values and this epoch's ``val_*``), the same on every process."""

    def finish_eval_epoch(self) -> Dict[str, float]:
        """The logs of the evaluation pass that just ended (``on_test_end``)."""

    def get_weights(self) -> List[np.ndarray]:
        """The weights as NumPy arrays."""

    def set_weights(self, weights: List[Any]) -> None:
        """Set the weights from arrays in :meth:`get_weights`'s order."""


class BridgeModule(CallbackHost, Protocol):
    """What ``KerasModule``'s helper modules read and set on it (its attributes are declared in its ``__init__``).

    Members whose types live in a helper module (the compile plans, trackers, optimizer cache) are
    typed ``Any`` here: naming those types would import the helpers back.
    """

    model: nn.Module
    training: bool
    stop_training: bool
    forward_parameters: Any
    loss_plan: Any
    metric_plan: Any
    optimizer_spec: Any
    keras_incompatible_arguments: List[str]
    keras_step: Any
    output_names: Optional[List[str]]
    output_kind: Optional[str]
    train_tracker: Any
    eval_tracker: Any
    optimizer_cache: Any
    launcher_states: Optional[Dict[str, Any]]
    pending_loader_states: List[Any]
    epoch_logs: Any
    fit_arguments: Optional[Dict[str, Any]]
    fit_count: int
    callback_facade: Any
    allow_fused_step: bool
    fused_step: Any
    fused_step_refusal: Optional[str]
    allow_captured_step: bool
    captured_step: Any
    automatic_optimization: bool
    # The batch in flight (keras_bridge.trainer.module_step).
    captured_forward: Any
    forward_losses: List[Any]
    output_losses: List[Tensor]
    step_inputs: Any
    run_regularizers: bool
    warned_untrainable: bool

    @property
    def trainer(self) -> pl.Trainer:
        """The Lightning Trainer the module is attached to."""

    @property
    def hparams(self) -> MutableMapping[str, Any]:
        """Lightning's hyperparameters of the module."""

    @property
    def built(self) -> bool:
        """Whether the first batch has built the model (its outputs are known)."""

    @property
    def learning_rate(self) -> Optional[float]:
        """The optimizer's current learning rate."""

    def apply_compile(self, result: Any) -> None:
        """Take a compile's result whole."""

    def require_compiled(self) -> None:
        """Raise unless compiled."""

    @property
    def compile(self) -> Callable[..., None]:
        """Keras's ``compile``, its arguments as the Keras model's own ``compile`` takes them."""

    def keep_keras_optimizer_only(self, reason: BaseException) -> None:
        """Drop the bridge's optimizer when the Keras model's own must be used."""

    @property
    def build_from_batch(self) -> Callable[[Any, Any, Any], None]:
        """Build the outputs, plans and trackers from the first batch."""

    def next_shuffle_seed(self) -> Optional[int]:
        """The seed of the next fit's independent shuffle; None: Keras's shuffle from the global generators."""

    def restore_training_state(self, states: Dict[str, Any]) -> None:
        """Restore the optimizer state a checkpoint carried."""

    @property
    def compute_loss(self) -> Callable[..., Tensor]:
        """Keras's ``compute_loss`` (a subclass may override it)."""

    @property
    def update_metrics(self) -> Callable[..., None]:
        """Add one batch to the stage's trackers and metrics (a subclass may override it)."""

    def ordered_results(self, logs: Dict[str, float]) -> Any:
        """Evaluation results in Keras's order."""

    def stage_results(self, training: bool) -> Dict[str, float]:
        """The results of the stage that just ended."""

    # Keras's own signatures, long and fixed: the helpers only call them through.
    @property
    def fit(self) -> Callable[..., Any]:
        """Keras's ``fit``."""

    @property
    def evaluate(self) -> Callable[..., Any]:
        """Keras's ``evaluate``."""

    @property
    def predict(self) -> Callable[..., Any]:
        """Keras's ``predict``."""

    @property
    def state_dict(self) -> Callable[..., Dict[str, Any]]:
        """The module's ``state_dict`` (torch's)."""

    @property
    def __call__(self) -> Callable[..., Any]:
        """The forward pass (``KerasModule.forward`` through torch's ``Module.__call__``)."""

    def configure_optimizers(self) -> Any:
        """Lightning's optimizer hook."""

    @property
    def log_dict(self) -> Callable[..., None]:
        """Lightning's ``log_dict``."""

    def train(self, mode: bool = True) -> Any:
        """Torch's ``train``."""

    def eval(self) -> Any:
        """Torch's ``eval``."""

    def parameters(self, recurse: bool = True) -> Any:
        """Torch's ``parameters``."""
