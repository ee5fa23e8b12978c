"""The fused training step: forward, loss, ``zero_grad``, backward and the optimizer update in one ``training_step``.

Lightning's automatic optimization runs a step through about twenty calls of its own (the optimizer
closure, ``LightningOptimizer.step``, the strategy's and the precision plugin's ``optimizer_step`` and
``backward``, the hooks around each) before and after the few that compute anything; for a small model
they cost as much as the arithmetic. When the run needs none of them, :class:`FusedStep` does the same
work directly, under Lightning's manual optimization: the module's step (forward, loss, metric updates),
the optimizer's ``zero_grad``, ``loss.backward()``, the optimizer's ``step()`` (Keras's update for a
Keras optimizer, with its ``iterations``, schedule and constraints; the bridge's for its own), a Keras
model's weight constraints when a torch optimizer trains it, and Lightning's step counts. Every call is
the one Lightning would make, in its order, on the same objects: the numbers are the same. (torch's own
wrappers of ``zero_grad`` and ``step``, which only open profiler records and run the optimizer step hooks, are
skipped while no such hook is registered.) Per step of the MLP of ``bench/run.py`` this saves about a sixth
of the bridge's time. For a Keras model, the forward pass, the loss and ``backward`` may run as one captured graph
instead (:mod:`keras_bridge.trainer.captured_step`: the gradients ``backward`` would leave, then the same update).

The choice is made once per fit, when it starts (:func:`begin`, from ``on_fit_start``: the optimizers are
configured, no batch has run), by :func:`fused_step_refusal`. The fused step is refused, and Lightning's
automatic optimization kept, whenever Lightning would do more than those calls:

* a Trainer on more than one device, or with another strategy than ``SingleDeviceStrategy``, or another
  precision plugin than the plain 32-bit ``Precision`` (loss scaling, autocast plugins);
* gradient accumulation (``accumulate_grad_batches``, ``GradientAccumulationScheduler``), gradient
  clipping by the Trainer (``gradient_clip_val``), a Lightning profiler, learning-rate schedulers stepped
  by Lightning (a Keras schedule on the bridge's own optimizer, a torch scheduler), several optimizers, or
  an optimizer that needs a closure (``LBFGS``, or a class neither torch's nor the bridge's);
* a ``StochasticWeightAveraging`` callback (it adds a scheduler and skips backward passes of the automatic loop);
* a hook of the step overridden in a ``KerasModule`` subclass (``training_step``, ``backward``,
  ``optimizer_step``, ``optimizer_zero_grad``, ``configure_gradient_clipping``, ``lr_scheduler_step``,
  ``on_before_zero_grad``, ``on_before_backward``, ``on_after_backward``, ``on_before_optimizer_step``) or
  one of the last four in a callback, or a Lightning ``ModelCheckpoint`` that saves within epochs
  (``every_n_train_steps``, ``train_time_interval``: Lightning saves those differently under manual
  optimization);
* ``module.allow_fused_step`` set to False.

A learning-rate scheduler that a callback adds during the fit (Lightning steps schedulers only under
automatic optimization) ends the fused step at the next epoch start, when it is there by then
(:meth:`FusedStep.still_exact`), and stops the fit with an error naming it when it appears within an epoch.

Example:
    >>> import numpy as np, torch
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> module.compile(optimizer="sgd", loss="mse")
    >>> _ = module.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=1, verbose=0)
    >>> module.fused_step_refusal is None  # this fit ran the fused step
    True
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from keras_bridge.optimizers.base import KerasOptimizer
from keras_bridge.optimizers.configure import apply_constraints
from keras_bridge.optimizers.keras_native import KerasNativeSpec, KerasOptimizerStep
from keras_bridge.trainer.captured_step import CapturedStep, captured_step_refusal
from keras_bridge.utils.compat import (
    OptimizerStepCounts,
    optimizer_step_hooks_set,
    saves_within_epochs,
    unwrapped_optimizer_step,
)
from keras_bridge.utils.overrides import overridden

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from keras_bridge.protocols import BridgeModule

__all__ = [
    "CALLBACK_HOOKS", "MODULE_HOOKS", "FusedStep", "at_epoch_start", "at_train_start", "begin", "end",
    "fused_step_refusal",
]  # fmt: skip

log = logging.getLogger("keras_bridge")

#: Hooks of the automatic optimization's step: overridden in a module's class, they keep Lightning's loop.
MODULE_HOOKS = (
    "training_step", "backward", "optimizer_step", "optimizer_zero_grad", "configure_gradient_clipping",
    "lr_scheduler_step", "on_before_zero_grad", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step",
)  # fmt: skip
#: The same, for callbacks.
CALLBACK_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


def _steps_without_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` needs no closure: the bridge's optimizers and torch's own, LBFGS excepted."""
    if isinstance(optimizer, (KerasOptimizer, KerasOptimizerStep)):
        return True
    cls = type(optimizer)
    return cls.__module__.startswith("torch.optim.") and not issubclass(cls, torch.optim.LBFGS)


def fused_step_refusal(module: BridgeModule, trainer: pl.Trainer, base: type) -> Optional[str]:
    """Why this fit keeps Lightning's automatic optimization, or None when the fused step gives the same run.

    Args:
        module: the ``KerasModule`` about to train (its optimizers configured).
        trainer: the Trainer running the fit.
        base: ``KerasModule`` itself: hooks that ``type(module)`` defines otherwise are the user's.
    """
    import lightning.pytorch as lightning
    from lightning.pytorch.callbacks import GradientAccumulationScheduler, StochasticWeightAveraging
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.profilers import PassThroughProfiler
    from lightning.pytorch.strategies import SingleDeviceStrategy

    if not getattr(module, "allow_fused_step", True):
        return "module.allow_fused_step is False"
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return f"the Trainer's strategy is {type(trainer.strategy).__name__}"
    if type(trainer.precision_plugin) is not Precision:
        return f"the Trainer's precision plugin is {type(trainer.precision_plugin).__name__}"
    if trainer.accumulate_grad_batches != 1:
        return f"accumulate_grad_batches={trainer.accumulate_grad_batches}"
    if trainer.gradient_clip_val:
        return f"gradient_clip_val={trainer.gradient_clip_val}"
    profiler = getattr(trainer, "profiler", None)  # set by the Trainer's __init__, not declared on the class
    if profiler is not None and not isinstance(profiler, PassThroughProfiler):
        return f"the Trainer profiles with {type(profiler).__name__}"
    if len(trainer.optimizers) != 1:
        return f"{len(trainer.optimizers)} optimizers"
    if trainer.lr_scheduler_configs:
        return "Lightning steps a learning-rate scheduler"
    if not _steps_without_closure(trainer.optimizers[0]):
        return f"the optimizer {type(trainer.optimizers[0]).__name__} may need a closure"
    hooks = overridden(module, base, MODULE_HOOKS)
    if hooks:
        return f"{type(module).__name__} overrides {', '.join(hooks)}"
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        hooks = overridden(callback, lightning.Callback, CALLBACK_HOOKS)
        if hooks:
            return f"the callback {type(callback).__name__} implements {', '.join(hooks)}"
        if isinstance(callback, (GradientAccumulationScheduler, StochasticWeightAveraging)):
            return f"a {type(callback).__name__} callback"
        if saves_within_epochs(callback):
            return f"the callback {type(callback).__name__} saves checkpoints within epochs"
    return None


class FusedStep:
    """One training step with its backward and optimizer update, as Lightning's automatic optimization does it.

    Args:
        module: the ``KerasModule``.
        trainer: the Trainer of the fit (its single optimizer is stepped).
        step: the module's step: ``step(batch, training=True)`` returns the loss (None to skip the backward).
        base: ``KerasModule`` itself (see :func:`~keras_bridge.trainer.captured_step.captured_step_refusal`).

    A Keras model's step may run from a captured graph (:mod:`keras_bridge.trainer.captured_step`):
    ``captured_step`` is the module's :class:`CapturedStep` while it may (``captured_step_refusal`` says
    why not otherwise, decided at the first step that finds the module built).
    """

    def __init__(
        self,
        module: BridgeModule,
        trainer: pl.Trainer,
        step: Callable[..., Optional[torch.Tensor]],
        base: Optional[type] = None,
    ) -> None:
        self.module, self.base = module, base
        self.trainer = trainer
        self.optimizer = optimizer = trainer.optimizers[0]
        # torch's per-call wrappers of zero_grad and step open profiler records (and run the step hooks, when
        # some are registered): skipped while no hook is there and nothing patched this optimizer's own step.
        self._own_zero_grad = type(optimizer).zero_grad is torch.optim.Optimizer.zero_grad
        self._optimizer_step = unwrapped_optimizer_step(optimizer)
        self.counts = OptimizerStepCounts(trainer)
        self.module_step = step
        # A Keras optimizer applies the weight constraints after each update; a torch optimizer does not.
        constrained = module.is_keras and not isinstance(module.optimizer_spec, KerasNativeSpec)
        self.constrained_model: Any = module.model if constrained else None
        self.captured_step: Optional[CapturedStep] = None
        self.captured_step_refusal: Optional[str] = None
        self._captured_step_chosen = not module.is_keras or base is None

    def _choose_captured_step(self) -> None:
        """Once the module is built (its first batch ran eagerly): the captured step, or why not."""
        module = self.module
        if not module.built:
            return
        self._captured_step_chosen = True
        reason = captured_step_refusal(module, self.base, self.optimizer)  # type: ignore[arg-type]
        self.captured_step_refusal = reason
        if reason is not None:
            log.debug("keras_bridge: the training step runs eagerly: %s.", reason)
            return
        if module.captured_step is None:
            module.captured_step = CapturedStep(module)
        self.captured_step = module.captured_step

    def still_exact(self) -> Optional[str]:
        """None while the fused step still does what Lightning would; else why not (checked at each epoch start)."""
        return "Lightning steps a learning-rate scheduler" if self.trainer.lr_scheduler_configs else None

    def __call__(self, batch: object) -> Optional[torch.Tensor]:
        if self.trainer.lr_scheduler_configs:
            raise RuntimeError(
                "A learning-rate scheduler was added to the Trainer within a training epoch, after the fused "
                "training step was chosen; Lightning would not step it. Set `module.allow_fused_step = False` "
                "before `fit` to train with Lightning's automatic optimization."
            )
        if not self._captured_step_chosen:
            self._choose_captured_step()
        optimizer = self.optimizer
        captured = self.captured_step(batch, optimizer) if self.captured_step is not None else None
        loss = self.module_step(batch, training=True) if captured is None else captured[0]
        # Lightning's order: zero_grad after the forward pass, then backward, then the update (also without a loss).
        if self._own_zero_grad:  # torch's zero_grad(set_to_none=True), without its profiler record
            for group in optimizer.param_groups:
                for param in group["params"]:
                    param.grad = None
        else:
            optimizer.zero_grad()
        if captured is not None:  # the gradients backward would leave, computed by the captured graph
            CapturedStep.assign_gradients(captured[1], captured[2])
        elif loss is not None:
            loss.backward()
        if self._optimizer_step is None or "step" in vars(optimizer) or optimizer_step_hooks_set(optimizer):
            optimizer.step()
        else:
            self._optimizer_step()
        if self.constrained_model is not None:
            apply_constraints(self.constrained_model)
        self.counts.count()
        return loss


def begin(module: BridgeModule, base: type, step: Callable[..., Optional[torch.Tensor]]) -> None:
    """At ``on_fit_start``, before the first batch: the fused step, or Lightning's automatic optimization (and why).

    Args:
        module: the ``KerasModule`` (its ``fused_step`` and ``fused_step_refusal`` are set).
        base: ``KerasModule`` itself (see :func:`fused_step_refusal`).
        step: the module's step (see :class:`FusedStep`).
    """
    reason = fused_step_refusal(module, module.trainer, base)
    module.fused_step_refusal = reason
    module.fused_step = FusedStep(module, module.trainer, step, base) if reason is None else None
    module.automatic_optimization = module.fused_step is None
    if reason is not None:
        log.debug("keras_bridge: the training step runs Lightning's automatic optimization: %s.", reason)


def end(module: BridgeModule) -> None:
    """Lightning's automatic optimization again (a fit ended, or a run starts after a fit that raised)."""
    module.fused_step = None
    module.automatic_optimization = module.keras_step is None


def at_train_start(module: BridgeModule) -> None:
    """Once the loops are restored: the manual step count from a checkpoint of either kind."""
    if module.fused_step is not None:
        module.fused_step.counts.align()


def at_epoch_start(module: BridgeModule) -> None:
    """After the callbacks' epoch start (one may have added a scheduler), before the epoch's first step."""
    reason = module.fused_step.still_exact() if module.fused_step is not None else None
    if reason is not None:
        module.fused_step_refusal = reason
        end(module)
        log.debug("keras_bridge: the training step runs Lightning's automatic optimization from now on: %s.", reason)
