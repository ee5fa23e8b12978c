"""``KerasModule``: a LightningModule that trains, evaluates and predicts with Keras's rules.

The module owns what Keras's ``Trainer`` owns: the compiled loss and metrics, their trackers, the optimizer
and the History. Its step is Keras's: ``compute_loss`` then ``update_metrics``, both overridable in a subclass as
in Keras. ``fit``/``evaluate``/``predict`` run a ``lightning.Trainer`` (:mod:`keras_bridge.trainer.engine`).
Here are the Lightning hooks and the public Keras API; the rest lives with its kind: compile resolution
(:mod:`keras_bridge.compile.compiler`, :mod:`~keras_bridge.compile.build`), the step
(:mod:`keras_bridge.trainer.module_step`), logs (:mod:`keras_bridge.trainer.module_logs`), the optimizer
(:mod:`keras_bridge.optimizers.configure`), History and checkpoint state (:mod:`keras_bridge.saving.history_state`,
:mod:`~keras_bridge.saving.lightning_checkpoint`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn

import keras_bridge.callbacks.model_facade as model_facade
import keras_bridge.compile.build as build
import keras_bridge.optimizers.configure as configure
import keras_bridge.saving.history_state as history_state
import keras_bridge.saving.lightning_checkpoint as checkpoints
import keras_bridge.trainer.engine as engine
import keras_bridge.trainer.fused_step as fused_step
import keras_bridge.trainer.module_logs as module_logs
import keras_bridge.trainer.module_step as module_step
from keras_bridge.capture import CapturedForward
from keras_bridge.compile import compiler
from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.tracking import StageTracker
from keras_bridge.model_methods import KerasModelMethods
from keras_bridge.optimizers.keras_native import KerasNativeSpec
from keras_bridge.saving.state import (
    apply_training_state,
    optimizer_states,
    states_for_pickle,
    states_from_bytes,
    training_state,
)
from keras_bridge.trainer import on_batch
from keras_bridge.trainer.arguments import check_model, forward_parameters, model_names
from keras_bridge.trainer.keras_step import KerasSteps
from keras_bridge.typing import ArrayTree
from keras_bridge.utils.attributes import PlainAttributeWrites, store_signatures
from keras_bridge.utils.compat import sends_weights_back, skip_no_op_batch_hooks
from keras_bridge.utils.keras import is_keras_model
from keras_bridge.utils.tree import unpack_x_y_sample_weight

Tensor = torch.Tensor


class KerasModule(KerasModelMethods, PlainAttributeWrites, pl.LightningModule):
    """Wrap a torch module or a Keras 3 model (torch backend) for Keras-style training on Lightning.

    Args:
        model: a ``torch.nn.Module`` or a ``keras.Model`` built with the torch backend.
        output_names: names of the outputs when ``model`` returns a tuple/list (a Keras model's
            ``output_names`` and the keys of a returned dict are used otherwise).
        input_names: names accepted in a dict ``x`` (defaults: a Keras model's input names, or
            the parameters of ``forward``).
        optimizer, loss, loss_weights, metrics, weighted_metrics, jit_compile: ``compile``'s arguments, for a
            module built from a configuration file (a ``LightningCLI`` YAML): when any but ``jit_compile`` is
            given, the module is compiled here (``optimizer`` then defaults to ``"rmsprop"``). Each accepts what
            ``compile`` accepts, Keras configs (``serialize_keras_object`` output, or ``{"class_name": ...}``) included.

    The last compile's arguments (as configs) are the module's ``hparams``, logged once per fit with the
    batch size and epochs: ``KerasModule.load_from_checkpoint(path, model=...)`` restores the module compiled.

    Example:
        >>> import torch, numpy as np
        >>> module = KerasModule(torch.nn.Linear(3, 1))
        >>> module.compile(optimizer="sgd", loss="mse")
        >>> history = module.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """

    def __init__(
        self,
        model: nn.Module,
        output_names: Optional[Sequence[str]] = None,
        input_names: Optional[Sequence[str]] = None,
        *,
        optimizer: Any = None, loss: Any = None, loss_weights: Any = None, metrics: Any = None,
        weighted_metrics: Any = None, jit_compile: Union[bool,str] = "auto",
    ) -> None:  # fmt: skip
        super().__init__()
        given_names = {"output_names": output_names, "input_names": input_names}
        check_model(model)
        self.model = model
        self.is_keras = is_keras_model(model)
        self.declared_output_names, self.input_names = model_names(model, output_names, input_names)
        self.forward_parameters = forward_parameters(model)
        # What a compile() sets, all at once (apply_compile; keras_bridge.compile.compiler).
        self.compiled = False
        self.loss_plan: Optional[LossPlan] = None
        self.metric_plan: Optional[MetricPlan] = None
        self.optimizer_spec: Any = None
        self.keras_incompatible_arguments: List[str] = []  # left out of the Keras model's own compile
        self.keras_step: Optional[KerasSteps] = None  # a Keras model trained by its own steps and compile
        self.captured_forward: Optional[CapturedForward] = None  # the Keras forward pass replayed from captured graphs
        # What a compile() resets: the build (output names, trackers) and the optimizer it made.
        self.output_names: Optional[List[str]] = None
        self.output_kind: Optional[str] = None
        self.train_tracker: Optional[StageTracker] = None
        self.eval_tracker: Optional[StageTracker] = None
        self.optimizer_cache = configure.OptimizerCache()
        self.pending_loader_states: List[Any] = []  # loader positions from trainer.fit(ckpt_path=...)
        # The batch in flight: the captured forward's losses, the per-output losses, the inputs (for a Keras
        # model's compute_metrics).
        self.forward_losses: List[Any] = []
        self.output_losses: List[Tensor] = []
        self.step_inputs: Any = None
        self.run_regularizers = self.is_keras
        self.warned_untrainable = False
        self.epoch_logs = module_logs.EpochLogs()
        self.history: Any = None
        # Set in a process a spawning launcher started (ddp_spawn), when its fit ends: the optimizer's state, sent
        # back with the weights (the extra state) so the launching process's next fit continues it.
        self.launcher_states: Optional[Dict[str, Any]] = None
        self.stop_training = False
        self.fit_arguments: Optional[Dict[str, Any]] = None  # of the fit in flight, logged with the hyperparameters
        self.fit_count = 0  # fits started (engine.next_shuffle_seed)
        self.callback_facade: Any = None  # what Keras callbacks see of a torch module (model_facade.callback_model)
        # The fused training step of the fit in flight (keras_bridge.trainer.fused_step); allow_fused_step: may run.
        self.allow_fused_step = True
        self.fused_step: Optional[fused_step.FusedStep] = None
        self.fused_step_refusal: Optional[str] = None  # why the last fit kept Lightning's automatic optimization
        # A Keras model's training step replayed from captured graphs (keras_bridge.trainer.captured_step).
        self.allow_captured_step = True
        # Fewer training steps in a fit than this: the captured step's trace (tens of milliseconds) would not pay off.
        self.captured_step_min_steps = 500
        self.captured_step: Any = None
        self.hparams.update({k: list(v) if v is not None else None for k, v in given_names.items()})
        skip_no_op_batch_hooks(self)  # Lightning need not call the batch hooks left as LightningModule's no-ops
        compiler.compile_from_constructor(self, optimizer, loss, loss_weights, metrics, weighted_metrics, jit_compile)

    # ------------------------------------------------------------------ compile (keras_bridge.compile)
    compile = compiler.compile
    require_compiled = compiler.require_compiled
    keep_keras_optimizer_only = compiler.keep_keras_optimizer_only
    build_from_batch = build.build_from_batch

    def apply_compile(self, result: compiler.CompileResult) -> None:
        """Take one ``compile()``'s result whole, and forget the build and the optimizer, as Keras does."""
        self.loss_plan, self.metric_plan = result.loss_plan, result.metric_plan
        self.optimizer_spec, self.keras_step, self.captured_forward = (
            result.optimizer_spec,
            result.keras_step,
            result.capture,
        )
        self.keras_incompatible_arguments = result.keras_incompatible_arguments
        self.captured_step = None  # its graphs hold the last compile's loss
        self.automatic_optimization = result.keras_step is None  # a model's own step calls backward itself
        self.compiled = True
        compiler.set_compile_hparams(self.hparams, result.hparams)
        self.output_names = self.output_kind = None
        self.train_tracker = self.eval_tracker = None
        self.optimizer_cache = configure.OptimizerCache()

    @property
    def built(self) -> bool:
        return self.train_tracker is not None

    next_shuffle_seed = engine.next_shuffle_seed

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        cache = self.optimizer_cache
        # Momentum, step count and schedule position carry over to the copy's next fit, as to this module's.
        # As bytes: a launcher's pickler shares tensors through file descriptors, closed once temporaries are freed.
        sent = cache.states_to_send(lambda: optimizer_states(self, cache.optimizer, cache.scheduler))
        state["optimizer_cache"] = cache.to_pickle()
        state["optimizer_states_sent"] = states_for_pickle(sent)
        # The last batch's losses and inputs (autograd graphs: neither picklable across processes nor needed).
        state.update(forward_losses=[], output_losses=[], step_inputs=None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Unpickled in a process a launcher started (ddp_spawn): a Keras model registers its variables
        # as torch parameters only when asked, and DDP must find them.
        sent = state.pop("optimizer_states_sent", None)
        super().__setstate__(state)
        if sent is not None:
            self.optimizer_cache.restored_state = states_from_bytes(sent)
        if self.is_keras:
            list(self.model.parameters())
            if isinstance(self.optimizer_spec, KerasNativeSpec):
                # Keras unpickles the model compiled with an optimizer of its own; the callbacks (an LR
                # schedule, ReduceLROnPlateau) must reach the one the bridge steps, as before pickling.
                object.__setattr__(self.model, "optimizer", self.optimizer_spec.keras_optimizer)

    callback_model = property(model_facade.callback_model)

    restore_training_state = configure.restore_training_state

    def forward(self, x: ArrayTree, training: bool = False) -> Any:
        """Call the wrapped model as Keras would (``training`` only reaches Keras models)."""
        if self.is_keras:
            if self.captured_forward is None:
                return self.model(x, training=training)
            y_pred, self.forward_losses = self.captured_forward(x, training)
            return y_pred
        if isinstance(x, dict):
            return self.model(**x)
        if isinstance(x, (list, tuple)):
            return self.model(*x)
        return self.model(x)

    # ------------------------------------------------------------------ steps (keras_bridge.trainer.module_step)
    compute_loss = module_step.compute_loss
    update_metrics = module_step.update_metrics
    _step = module_step.step

    def training_step(self, batch: object, batch_idx: int) -> Tensor:
        if self.fused_step is not None:
            return self.fused_step(batch)  # type: ignore[return-value]
        if self.keras_step is not None:
            self.keras_step.train_step(batch, self.trainer)
            return None  # type: ignore[return-value]
        return self._step(batch, training=True)

    def validation_step(self, batch: object, batch_idx: int) -> None:
        if self.keras_step is not None:
            if not self.trainer.sanity_checking:  # Keras runs no sanity check
                self.keras_step.test_step(batch)
            return
        self._step(batch, training=False)

    test_step = validation_step

    def predict_step(self, batch: object, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if self.keras_step is not None:
            return self.keras_step.predict_step(batch)
        x, _, _ = unpack_x_y_sample_weight(batch)
        return self(x, training=False)

    # ------------------------------------------------------------------ logs (keras_bridge.trainer.module_logs)
    batch_logs = module_logs.batch_logs
    stage_results = module_logs.stage_results
    reset_stage = module_logs.reset_stage
    finish_eval_epoch = module_logs.finish_eval_epoch
    finish_train_epoch = module_logs.finish_train_epoch
    ordered_results = module_logs.ordered_results

    def on_train_epoch_start(self) -> None:
        fused_step.at_epoch_start(self)
        self.reset_stage(training=True)
        self.epoch_logs.train, self.epoch_logs.val = None, {}

    def on_validation_epoch_start(self) -> None:
        self.reset_stage(training=False)
        self.epoch_logs.eval = None

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        module_logs.log_eval_epoch(self)

    on_test_epoch_end = on_validation_epoch_end

    def on_train_epoch_end(self) -> None:
        module_logs.log_train_epoch(self)

    def configure_callbacks(self) -> List[pl.Callback]:
        fused_step.end(self)  # Lightning calls this first in every run, before it checks the loop configuration
        return []

    def on_fit_start(self) -> None:
        if self.keras_step is not None:
            self.keras_step.check_trainer(self.trainer)
        else:
            fused_step.begin(self, KerasModule, self._step)
        # Optimizers exist, no callback's on_train_begin ran yet (BackupAndRestore may replace this state).
        if self.optimizer_cache.restored_state is not None:
            apply_training_state(self.trainer, self.optimizer_cache.restored_state, self)
            self.optimizer_cache.restored_state = None
        module_logs.log_hyperparameters(self)

    def on_train_start(self) -> None:
        checkpoints.load_loader_states(self)
        fused_step.at_train_start(self)

    def on_train_batch_end(self, outputs: STEP_OUTPUT, batch: object, batch_idx: int) -> None:
        module_logs.log_batch_logs(self)

    def on_train_end(self) -> None:
        # Keras copies EMA weights into the model when fit ends (use_ema=True).
        if self.keras_step is not None:
            self.keras_step.finish_fit(bool(self.trainer.max_epochs))
        configure.finalize_optimizers(self.trainer.optimizers)

    def on_fit_end(self) -> None:
        fused_step.end(self)
        self.forward_losses, self.output_losses = [], []  # the last batch's, with its autograd graph
        if sends_weights_back(self.trainer):
            self.launcher_states = training_state(self)

    # ------------------------------------------------------------------ optimizers (keras_bridge.optimizers.configure)
    def configure_optimizers(self) -> Any:
        self.require_compiled()
        if self.keras_step is not None:
            return None  # the model's own optimizers, applied by its train_step
        return self.optimizer_cache.configure(self.optimizer_spec, self.model)

    learning_rate = property(configure.learning_rate, configure.set_module_learning_rate)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.is_keras and not isinstance(self.optimizer_spec, KerasNativeSpec):
            # A Keras optimizer applies weight constraints after each update; a torch optimizer does not.
            configure.apply_constraints(self.model)

    # ------------------------------------------------------------------ state (keras_bridge.saving)
    # Lightning checkpoints: the bridge's entry (compile arguments, model description) in, restored from.
    on_save_checkpoint = checkpoints.add_checkpoint_entry
    on_load_checkpoint = checkpoints.restore_from_checkpoint
    # The History travels in the state_dict, hence back from ddp_spawn workers (with the optimizer's state) and into
    # checkpoints.
    get_extra_state = history_state.extra_state
    set_extra_state = history_state.load_extra_state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """``load_state_dict``, another instance's Keras variable paths matched by position (ddp_spawn's workers)."""
        return super().load_state_dict(checkpoints.match_keras_state(self, state_dict), strict=strict, assign=assign)

    # ------------------------------------------------------------------ Keras-style API
    # The entry points are the engine's functions, bound as methods: one signature, one docstring each.
    fit = engine.fit
    evaluate = engine.evaluate
    predict = engine.predict
    train_on_batch = on_batch.train_on_batch
    test_on_batch = on_batch.test_on_batch
    predict_on_batch = on_batch.predict_on_batch


store_signatures(KerasModule.training_step, KerasModule.validation_step, KerasModule.predict_step)
