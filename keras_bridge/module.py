"""``KerasModule``: a LightningModule that trains, evaluates and predicts with Keras's rules.

The module owns what Keras's ``Trainer`` owns: the compiled loss and metrics, their trackers, the
optimizer spec and the History. The training step is Keras's: ``compute_loss`` then
``update_metrics``, both overridable in a subclass as in Keras. ``fit``/``evaluate``/``predict`` hand
the Keras-style arguments to :mod:`keras_bridge.trainer.engine`, which runs a ``lightning.Trainer``.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch import nn

import keras_bridge.trainer.engine as engine
from keras_bridge.callbacks.model_facade import callback_model_for
from keras_bridge.capture import CapturedForward
from keras_bridge.compile.keras_args import split_keras_arguments
from keras_bridge.compile.keras_compile import bind_compile_arguments, check_keras_options, compiled_by_keras
from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.structure import flatten_outputs, flatten_targets, output_structure, resolve_output_names
from keras_bridge.compile.tracking import KerasHooks, StageTracker
from keras_bridge.configs import COMPILE_ARGUMENTS, compile_config, resolve_compile_arguments
from keras_bridge.data.distributed import GlobalBatchInfo
from keras_bridge.model_methods import KerasModelMethods
from keras_bridge.optimizers.base import get_learning_rate, set_learning_rate
from keras_bridge.optimizers.keras_native import KerasNativeSpec, keras_optimizer_for
from keras_bridge.optimizers.resolve import get_optimizer
from keras_bridge.optimizers.schedules import KerasScheduleLR
from keras_bridge.saving.lightning_checkpoint import KEY, checkpoint_entry, match_keras_state, restore_from_checkpoint
from keras_bridge.saving.state import apply_training_state
from keras_bridge.trainer import on_batch
from keras_bridge.trainer.keras_step import KerasSteps
from keras_bridge.utils.compat import logging_due
from keras_bridge.utils.errors import NotCompiledError
from keras_bridge.utils.keras import import_keras, is_keras_model, keras_input_names
from keras_bridge.utils.tree import first_batch_dim, unpack_batch

Tensor = torch.Tensor


class KerasModule(KerasModelMethods, pl.LightningModule):
    """Wrap a torch module or a Keras 3 model (torch backend) for Keras-style training on Lightning.

    Args:
        model: a ``torch.nn.Module`` or a ``keras.Model`` built with the torch backend.
        output_names: names of the outputs when ``model`` returns a tuple/list (a Keras model's
            ``output_names`` and the keys of a returned dict are used otherwise).
        input_names: names accepted in a dict ``x`` (defaults: a Keras model's input names, or
            the parameters of ``forward``).
        optimizer: ``compile``'s argument, for a module built from a configuration file (a
            ``LightningCLI`` YAML): when any of ``optimizer``, ``loss``, ``loss_weights``, ``metrics`` and
            ``weighted_metrics`` is given, the module is compiled here (``optimizer`` then defaults to
            ``"rmsprop"``). Each accepts what ``compile`` accepts, Keras configs
            (``keras.saving.serialize_keras_object`` output, or ``{"class_name": ..., "config": {...}}``)
            included.
        loss: ``compile``'s argument (see ``optimizer``).
        loss_weights: ``compile``'s argument (see ``optimizer``).
        metrics: ``compile``'s argument (see ``optimizer``).
        weighted_metrics: ``compile``'s argument (see ``optimizer``).
        jit_compile: ``compile``'s argument, used when the module is compiled here.

    The last compile's arguments are the module's hyperparameters (``module.hparams``, as configs), so
    a Lightning checkpoint restores the module compiled:
    ``KerasModule.load_from_checkpoint(path, model=...)``. They are logged once per fit to the Trainer's
    loggers, with the batch size and epochs.

    Example:
        >>> import torch, numpy as np
        >>> module = KerasModule(torch.nn.Linear(3, 1))
        >>> module.compile(optimizer="sgd", loss="mse")
        >>> history = module.fit(np.ones((8, 3)), np.zeros((8, 1)), epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
        >>> module = KerasModule(torch.nn.Linear(3, 1), optimizer={"class_name": "SGD"}, loss="mse")
        >>> module.compiled, module.hparams["optimizer"]["class_name"]
        (True, 'SGD')
    """

    def __init__(
        self,
        model: nn.Module,
        output_names: Optional[Sequence[str]] = None,
        input_names: Optional[Sequence[str]] = None,
        *,
        optimizer: Any = None, loss: Any = None, loss_weights: Any = None, metrics: Any = None,
        weighted_metrics: Any = None, jit_compile: Any = "auto",
    ) -> None:  # fmt: skip
        super().__init__()
        given_names = {"output_names": output_names, "input_names": input_names}
        if not isinstance(model, nn.Module):
            raise TypeError(
                "Expected `model` to be a torch.nn.Module or a Keras model built with the torch "
                f"backend. Received: model of type {type(model).__name__}"
            )
        self.model = model
        self.is_keras = is_keras_model(model)
        if output_names is None and self.is_keras:
            output_names = list(getattr(model, "output_names", None) or []) or None
        self.declared_output_names = list(output_names) if output_names is not None else None
        if input_names is None and self.is_keras:
            input_names = keras_input_names(model)
        self.input_names = list(input_names) if input_names is not None else None
        self.compiled = False
        self.loss_plan: Optional[LossPlan] = None
        self.metric_plan: Optional[MetricPlan] = None
        self.optimizer_spec: Any = None
        # compile() arguments Keras cannot take (torch losses, torchmetrics), left out of the Keras model's compile.
        self.keras_incompatible_arguments: List[str] = []
        # What a compile() resets: the build (output names, trackers) and the optimizer it made.
        self.output_names: Optional[List[str]] = None
        self.output_kind: Optional[str] = None
        self.train_tracker: Optional[StageTracker] = None
        self.eval_tracker: Optional[StageTracker] = None
        self._optimizer_cache: Optional[tuple] = None
        # A Keras model trained with its own step functions and compile (see keras_bridge.trainer.keras_step).
        self.keras_step: Optional[KerasSteps] = None
        self._pending_learning_rate: Optional[float] = None  # set by `learning_rate`, see there
        # Optimizer/scheduler state restored from a file (kb.load_model), applied when the next fit starts.
        self._restored_state: Optional[Dict[str, Any]] = None
        # Training loaders' positions from trainer.fit(ckpt_path=...) that Lightning does not restore.
        self.pending_loader_states: List[Any] = []
        self.history: Any = None
        self.stop_training = False
        self._train_logs: Optional[Dict[str, float]] = None
        self._train_logs_epoch: Optional[int] = None  # the epoch _train_logs belong to
        self._eval_logs: Optional[Dict[str, float]] = None
        self._val_logs: Dict[str, float] = {}
        self._run_regularizers = self.is_keras
        # The Keras forward pass replayed from captured graphs (compile(jit_compile=...)), and its losses.
        self._capture: Optional[CapturedForward] = None
        self._forward_losses: List[Any] = []
        self.forward_parameters = self._forward_signature(model)
        # Per-output losses of the batch in flight, from compute_loss to update_metrics.
        self._output_losses: List[Tensor] = []
        self._fits = 0
        self._warned_untrainable = False
        self._callback_model: Any = None
        # The fit arguments of the call in flight (set by fit), logged with the hyperparameters.
        self.fit_arguments: Optional[Dict[str, Any]] = None
        self.hparams.update({k: list(v) if v is not None else None for k, v in given_names.items()})
        compile_arguments = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights}
        compile_arguments.update(metrics=metrics, weighted_metrics=weighted_metrics)
        if any(v is not None for v in compile_arguments.values()):
            if optimizer is None:
                compile_arguments["optimizer"] = "rmsprop"
            self.compile(**compile_arguments, jit_compile=jit_compile)

    # ------------------------------------------------------------------ compile
    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Configure training the Keras way: Keras's ``compile(optimizer="rmsprop", loss=None, loss_weights=None,
        metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
        auto_scale_loss=True)``.

        Args:
            *args: Keras's arguments by position, in the order above.
            **kwargs: Keras's arguments by name:
            optimizer: a Keras string (``"rmsprop"``), a Keras optimizer object, a
                ``keras_bridge.optimizers`` object, a torch optimizer class, or a factory
                ``params -> torch.optim.Optimizer``.
            loss: a loss identifier, a list (one per output) or a dict keyed by output name;
                ``None`` entries skip an output.
            loss_weights: a number, list or dict of per-output loss weights.
            metrics: a list, list of lists, or dict of metrics (strings, Keras metrics,
                torchmetrics metrics or functions).
            weighted_metrics: like ``metrics``; these receive sample and class weights.
            run_eagerly: ``True`` calls the model eagerly, nothing captured (and turns ``jit_compile=True``
                off, with Keras's warning).
            steps_per_execution: 1; more is refused with Keras's message, as Keras's torch backend does.
            jit_compile: for a Keras model, ``"auto"`` (the default) and ``True`` capture its forward pass
                once per input signature and replay it (:mod:`keras_bridge.capture`: Keras's numbers,
                less Python per step; ``True`` also runs the captured graph through ``torch.compile``, as
                Keras's torch backend compiles its step); ``False`` calls the model eagerly.
            auto_scale_loss: as in Keras: a Keras model with the ``mixed_float16`` policy gets its
                optimizer wrapped in a ``LossScaleOptimizer`` by its own ``compile`` (and trains with its own
                steps, which scale the loss).

        A Keras model whose class defines its own ``compile`` (any signature, e.g. a GAN's
        ``compile(d_optimizer, g_optimizer, loss_fn)``) or its own ``train_step`` / ``test_step`` /
        ``predict_step`` gets the arguments as written, in its own ``compile``, and is trained by its own
        steps (:mod:`keras_bridge.trainer.keras_step`). Re-compiling keeps what Keras keeps: the loss when
        ``loss`` is not given, the metrics when neither ``metrics`` nor ``weighted_metrics`` is.

        Losses, metrics, optimizers and learning-rate schedules may also be given as Keras configs: what
        ``keras.saving.serialize_keras_object(obj)`` returns (classes and functions registered with
        ``keras.saving.register_keras_serializable`` included), or ``{"class_name": ..., "config": {...}}``,
        at any place of a ``loss`` / ``metrics`` structure (:mod:`keras_bridge.configs`).

        Note:
            This replaces ``torch.nn.Module.compile``; use ``torch.compile(module.model)`` for that.
        """
        if self.is_keras and compiled_by_keras(self.model, kwargs.get("auto_scale_loss", True)):
            self.model.compile(*args, **kwargs)
            self._use_keras_steps()
            return
        self._compile(**bind_compile_arguments(args, kwargs))

    def _compile(self, optimizer: Any, loss: Any, loss_weights: Any, metrics: Any, weighted_metrics: Any,
                 run_eagerly: bool, steps_per_execution: int, jit_compile: Any,
                 auto_scale_loss: bool) -> None:  # fmt: skip
        jit_compile = check_keras_options(run_eagerly, steps_per_execution, jit_compile, auto_scale_loss, self.is_keras)
        if loss is None and self.loss_plan is not None:
            # Keras keeps the compiled loss (and its weights) when a new compile gives none.
            loss, loss_weights = self.loss_plan.arguments["loss"], self.loss_plan.arguments["loss_weights"]
        # Keras configs (serialize_keras_object output, or the bridge's saved form) become the objects.
        given = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights}
        resolved = resolve_compile_arguments({**given, "metrics": metrics, "weighted_metrics": weighted_metrics})
        optimizer, loss, loss_weights = resolved["optimizer"], resolved["loss"], resolved["loss_weights"]
        metrics, weighted_metrics = resolved["metrics"], resolved["weighted_metrics"]
        # A model whose own compute_loss/compute_metrics run each step reads model.losses: it runs eagerly.
        capture = self.is_keras and jit_compile and KerasHooks.detect(self.model, False) is None
        self._capture = CapturedForward(self.model, compile_graphs=jit_compile is True) if capture else None
        keras_optimizer = keras_optimizer_for(optimizer) if self.is_keras else None
        if keras_optimizer is not None:
            # A Keras model keeps its Keras optimizer: Keras's own update, state and learning rate.
            self.optimizer_spec = KerasNativeSpec(keras_optimizer)
        else:
            self.optimizer_spec = get_optimizer(optimizer)
        self.loss_plan = LossPlan(loss, loss_weights)
        if metrics is not None or weighted_metrics is not None or self.metric_plan is None:
            # Keras keeps the previous compiled metrics when neither argument is given.
            self.metric_plan = MetricPlan(metrics, weighted_metrics)
        else:
            self.metric_plan = MetricPlan(**self.metric_plan.arguments)
        if self.declared_output_names and self.is_keras:
            self.loss_plan.check_names(self.declared_output_names)
            self.metric_plan.check_names(self.declared_output_names)
        if keras_optimizer is not None:
            self._compile_keras_model(keras_optimizer, run_eagerly=run_eagerly, auto_scale_loss=auto_scale_loss)
        self.keras_step = None
        self.automatic_optimization = True
        self.compiled = True
        self._forget_build()
        self._record_compile(optimizer, jit_compile)

    def _record_compile(self, optimizer: Any, jit_compile: Any) -> None:
        # The hyperparameters: this compile's arguments as configs (none when one cannot be described).
        assert self.loss_plan is not None and self.metric_plan is not None
        config = compile_config({"optimizer": optimizer, **self.loss_plan.arguments, **self.metric_plan.arguments})
        for name in COMPILE_ARGUMENTS:
            self.hparams.pop(name, None)
        self.hparams.update({**(config or {}), "jit_compile": jit_compile})

    def _use_keras_steps(self) -> None:
        # The model's own compile ran: its steps train it, with its optimizers, losses and metrics.
        self.keras_step = KerasSteps(self.model)
        self.loss_plan = self.metric_plan = self.optimizer_spec = None
        self._capture = None
        self.keras_incompatible_arguments = []
        self.automatic_optimization = False  # the step calls backward and its optimizers itself
        self.compiled = True
        self._forget_build()
        for name in COMPILE_ARGUMENTS:
            self.hparams.pop(name, None)

    def _compile_keras_model(self, keras_optimizer: Any, **options: Any) -> None:
        # Plain Keras then finds the model compiled as the user compiled it: model.optimizer is the
        # optimizer the bridge steps, and model.save writes Keras's compile config and optimizer state.
        assert self.loss_plan is not None and self.metric_plan is not None
        arguments, self.keras_incompatible_arguments = split_keras_arguments(
            {**self.loss_plan.arguments, **self.metric_plan.arguments}
        )
        keras_model: Any = self.model
        keras_model.compile(optimizer=keras_optimizer, **arguments, **options)

    def keep_keras_optimizer_only(self, reason: BaseException) -> None:
        """Compile the Keras model with its optimizer only, when Keras refuses arguments the bridge accepts.

        The bridge trains with the arguments as given; plain Keras then finds the model compiled without
        a loss or metrics (``model.optimizer`` is still the trained optimizer). Said once, with Keras's reason.
        """
        assert self.loss_plan is not None and self.metric_plan is not None
        keras_model: Any = self.model
        optimizer = keras_model.optimizer
        self.keras_incompatible_arguments = sorted({**self.loss_plan.arguments, **self.metric_plan.arguments})
        keras_model.compile(optimizer=optimizer)
        warnings.warn(
            "The Keras model itself is compiled with the optimizer only: Keras's compile cannot take the "
            f"`loss`/`metrics` arguments the bridge trains with ({str(reason).splitlines()[0]}). Plain "
            "`model.evaluate`/`model.fit` will need `model.compile(...)` again.",
            stacklevel=4,
        )

    def _forget_build(self) -> None:
        # A new compile() rebuilds from the next batch and makes a new optimizer, as in Keras.
        self.output_names = self.output_kind = None
        self.train_tracker = self.eval_tracker = None
        self._optimizer_cache = self._restored_state = self._pending_learning_rate = None

    @property
    def built(self) -> bool:
        return self.train_tracker is not None

    def require_compiled(self) -> None:
        """Raise :class:`~keras_bridge.utils.errors.NotCompiledError` unless ``compile()`` was called.

        A Keras model compiled by Keras before it was wrapped is trained as Keras compiled it.
        """
        if not self.compiled and self.is_keras and getattr(self.model, "compiled", False):
            self._use_keras_steps()
        if not self.compiled:
            raise NotCompiledError(
                "You must call `compile()` before using the model: call "
                "module.compile(optimizer=..., loss=..., metrics=...) before fit() or evaluate()."
            )

    def next_shuffle_seed(self) -> int:
        """The shuffle seed of the next fit: reproducible under ``keras.utils.set_random_seed``/``seed_everything``.

        Derived from torch's initial seed and this module's fit count rather than drawn from the global
        RNG, so calling fit does not shift the random stream that the model's own layers draw from.
        """
        self._fits += 1
        return (torch.initial_seed() + 7919 * (self._fits - 1)) % (2**31 - 1)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Unpickled in a process a launcher started (ddp_spawn): a Keras model registers its variables
        # as torch parameters only when asked, and DDP must find them.
        super().__setstate__(state)
        if self.is_keras:
            list(self.model.parameters())

    @property
    def callback_model(self) -> Any:
        """What Keras callbacks see as ``self.model``: the Keras model, or a Keras-like facade of a torch module."""
        if self.is_keras:
            return callback_model_for(self)  # the model itself (never stored again: it is a submodule)
        if self._callback_model is None:
            self._callback_model = callback_model_for(self)
        return self._callback_model

    def restore_training_state(self, states: Dict[str, Any]) -> None:
        """Keep optimizer/LR-scheduler states (as saved in a file) to load when the next ``fit`` starts."""
        self._restored_state = dict(states)

    # ------------------------------------------------------------------ calling the model
    @staticmethod
    def _forward_signature(model: nn.Module) -> Optional[List[str]]:
        try:
            params = inspect.signature(model.forward).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def forward(self, x: Any, training: bool = False) -> Any:
        """Call the wrapped model as Keras would (``training`` only reaches Keras models)."""
        if self.is_keras:
            if self._capture is None:
                return self.model(x, training=training)
            y_pred, self._forward_losses = self._capture(x, training)
            return y_pred
        if isinstance(x, dict):
            return self.model(**x)
        if isinstance(x, (list, tuple)):
            return self.model(*x)
        return self.model(x)

    # ------------------------------------------------------------------ building
    def build_from_batch(self, x: Any, y: Any, y_pred: Any) -> None:
        """Resolve the output structure and instantiate losses/metrics from one batch (Keras's lazy build).

        The outputs may be any nesting of lists, tuples, namedtuples and dicts (Keras's rules, see
        :mod:`keras_bridge.compile.structure`). A Keras model whose class overrides ``compute_loss`` or
        ``compute_metrics`` gets them called at every step, as Keras's ``train_step`` calls them.
        """
        self.require_compiled()
        if self.keras_step is not None:
            self.train_tracker, self.eval_tracker = self.keras_step.train_logs, self.keras_step.eval_logs  # type: ignore[assignment]
            return
        assert self.loss_plan is not None and self.metric_plan is not None
        outputs = output_structure(y_pred, self.declared_output_names)
        self.output_kind = outputs.kind
        self.output_names = outputs.names
        self.loss_plan.build(outputs)
        hooks = None
        if self.is_keras:
            # Keras's own logs need the model compiled by Keras with every argument (a Keras optimizer).
            keras_logs = isinstance(self.optimizer_spec, KerasNativeSpec) and not getattr(
                self, "keras_incompatible_arguments", None
            )
            hooks = StageTracker.keras_hooks(self.model, keras_logs)
        yp_flat = flatten_outputs(y_pred, outputs)
        try:
            y_flat = flatten_targets(y, outputs, with_loss=self.loss_plan.output_has_loss)
        except ValueError:
            # A model whose compute_loss gives the loss and Keras's logs may take targets shaped for its
            # override rather than for its outputs, as in Keras: the bridge's plans never read them.
            if hooks is None or not (hooks.loss and hooks.keras_logs):
                raise
        else:
            self.metric_plan.build(outputs, y_flat, [t.detach() if isinstance(t, Tensor) else t for t in yp_flat])
        device = yp_flat[0].device if yp_flat and isinstance(yp_flat[0], Tensor) else None
        self.train_tracker = StageTracker(self.loss_plan, self.metric_plan, clone=False, hooks=hooks)
        self.eval_tracker = StageTracker(self.loss_plan, self.metric_plan, clone=True, hooks=hooks)
        if device is not None:
            self.train_tracker.to(device)
            self.eval_tracker.to(device)

    # ------------------------------------------------------------------ steps
    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Tensor:
        """Keras's ``compute_loss``: the compiled losses, weighted and summed, plus the model's own losses.

        Override it in a subclass as in Keras (``x`` is given for losses that need the inputs). A Keras
        model whose class overrides ``compute_loss`` gives the loss itself (its override runs here).

        Raises:
            ValueError: no compiled loss and no model losses.
        """
        plan = self.loss_plan
        assert plan is not None and plan.outputs is not None
        outputs = plan.outputs
        hooks = self.train_tracker.hooks if self.train_tracker is not None else None
        if hooks is not None and hooks.runs_keras_loss:
            loss = hooks.compute_loss(x, y, y_pred, sample_weight, training)
            if plan.tracker_names and not hooks.keras_logs:
                with torch.no_grad():  # the per-output values the bridge's own trackers log
                    self._output_losses = plan(
                        flatten_targets(y, outputs, with_loss=plan.output_has_loss),
                        flatten_outputs(y_pred, outputs),
                        flatten_targets(sample_weight, outputs, "sample_weight"),
                    )[1]
            return loss
        y_flat = flatten_targets(y, outputs, with_loss=plan.output_has_loss)
        yp_flat = flatten_outputs(y_pred, outputs)
        sw_flat = flatten_targets(sample_weight, outputs, "sample_weight")
        total, self._output_losses = plan(y_flat, yp_flat, sw_flat)
        if self._run_regularizers:
            extra = self.model.losses if self._capture is None else self._forward_losses
            if extra:
                reg = torch.stack([torch.sum(t.float()) for t in extra]).sum()  # type: ignore[union-attr]
                total = reg if total is None else total + reg
        if total is None:
            raise ValueError(
                "No loss to compute. Provide a `loss` argument in `compile()` (or give the model "
                "regularization / add_loss losses)."
            )
        return total

    def update_metrics(
        self, y: Any, y_pred: Any, sample_weight: Any, loss: Tensor, batch_size: int, training: bool = True
    ) -> None:
        """Add one batch to the stage's loss trackers and compiled metrics (Keras's ``update_state``).

        For a Keras model that overrides ``compute_loss`` or ``compute_metrics``, the model's
        ``compute_metrics`` runs too and its return value gives the logs, as in Keras's ``train_step``.
        """
        tracker = self.train_tracker if training else self.eval_tracker
        plan = self.loss_plan
        assert tracker is not None and plan is not None and plan.outputs is not None
        outputs = plan.outputs
        tracker.update_losses(loss, self._output_losses, batch_size)
        hooks = tracker.hooks
        if hooks is not None and hooks.runs_keras_metrics:
            x = getattr(self, "_step_inputs", None)
            tracker.update_keras_logs(x, y, y_pred, sample_weight, loss, batch_size)
            if hooks.keras_logs:
                return
        tracker.update_metrics(
            flatten_targets(y, outputs, with_loss=plan.output_has_loss),
            flatten_outputs(y_pred, outputs),
            flatten_targets(sample_weight, outputs, "sample_weight"),
        )

    def _step(self, batch: Any, training: bool) -> Tensor:
        info = None
        if isinstance(batch, tuple) and batch and isinstance(batch[-1], GlobalBatchInfo):
            batch, info = batch[:-1], batch[-1]
        x, y, sw = unpack_batch(batch)
        y_pred = self(x, training=training)
        batch_size = first_batch_dim(x)
        if batch_size == 0:
            # An empty DDP shard still joins the gradient all-reduce, with zero gradients.
            outputs = flatten_outputs(y_pred, resolve_output_names(y_pred, self.output_names))
            return torch.stack([t.sum() for t in outputs]).sum() * 0.0
        if not self.built:
            self.build_from_batch(x, y, y_pred)
        self._output_losses = []
        self._step_inputs = x  # for a Keras model's compute_metrics, called from update_metrics
        total = self.compute_loss(x, y, y_pred, sw, training=training)
        self.update_metrics(y, y_pred, sw, total, batch_size, training=training)
        self._step_inputs = None
        if info is not None and training:
            total = total * (info.world_size * batch_size / info.global_size)
        if training and not total.requires_grad:
            # Nothing to train (no trainable weights): Keras skips the update and says so.
            if not self._warned_untrainable:
                self._warned_untrainable = True
                warnings.warn("The model does not have any trainable weights.", stacklevel=2)
            return None  # type: ignore[return-value]
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.keras_step is not None:
            self.keras_step.train_step(batch, self.trainer)
            return None  # type: ignore[return-value]
        return self._step(batch, training=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if self.keras_step is not None:
            if not self.trainer.sanity_checking:  # Keras runs no sanity check
                self.keras_step.test_step(batch)
            return
        self._step(batch, training=False)

    test_step = validation_step

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if self.keras_step is not None:
            return self.keras_step.predict_step(batch)
        x, _, _ = unpack_batch(batch)
        return self(x, training=False)

    # ------------------------------------------------------------------ logs
    def batch_logs(self, training: bool = True) -> Dict[str, float]:
        """Running means since the epoch started, from this process only (Keras batch-end logs)."""
        tracker = self.train_tracker if training else self.eval_tracker
        return tracker.results(sync=False) if tracker is not None and tracker.updated else {}

    def stage_results(self, training: bool) -> Dict[str, float]:
        """Synchronised results of a stage (a collective under DDP: call on every process)."""
        tracker = self.train_tracker if training else self.eval_tracker
        if tracker is None or (not tracker.updated and self.trainer.world_size == 1):
            return {}
        return tracker.results(sync=True)

    def reset_stage(self, training: bool) -> None:
        tracker = self.train_tracker if training else self.eval_tracker
        if tracker is not None:
            tracker.reset()

    def finish_eval_epoch(self) -> Dict[str, float]:
        """Synchronised results of the evaluation pass that just ended (computed once)."""
        if self._eval_logs is None:
            tracker = self.eval_tracker
            self._eval_logs = tracker.results(sync=True) if tracker is not None else {}
        return self._eval_logs

    def finish_train_epoch(self) -> Dict[str, float]:
        """Keras epoch logs: synchronised training results plus this epoch's ``val_*`` (computed once)."""
        if self._train_logs is None:
            if self.keras_step is not None:
                self._train_logs = self.keras_step.train_logs.with_validation(self._val_logs)
            else:
                logs = self.stage_results(training=True)
                logs.update(self._val_logs)
                self._train_logs = dict(sorted(logs.items()))
            self._train_logs_epoch = self.trainer.current_epoch
        return self._train_logs

    def on_train_epoch_start(self) -> None:
        self.reset_stage(training=True)
        self._train_logs = None
        self._val_logs = {}

    def on_validation_epoch_start(self) -> None:
        self.reset_stage(training=False)
        self._eval_logs = None

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        logs = self.finish_eval_epoch()
        trainer = self.trainer
        if trainer.sanity_checking:
            return
        if trainer.training or trainer.state.fn == "fit":
            self._val_logs = {f"val_{k}": v for k, v in logs.items()}
            self.log_dict(self._val_logs, sync_dist=False)
        else:
            self.log_dict(logs, sync_dist=False)

    on_test_epoch_end = on_validation_epoch_end

    def on_train_epoch_end(self) -> None:
        logs = self.finish_train_epoch()
        self.log_dict({k: v for k, v in logs.items() if not k.startswith("val_")}, sync_dist=False)

    def on_fit_start(self) -> None:
        if self.keras_step is not None:
            self.keras_step.check_trainer(self.trainer)
        # After the optimizers exist and before any callback's on_train_begin (BackupAndRestore may
        # then replace this state with its own).
        if self._restored_state is not None:
            apply_training_state(self.trainer, self._restored_state, self)
            self._restored_state = None
        self._log_hyperparameters()

    def on_train_start(self) -> None:
        # trainer.fit(ckpt_path=...) from an epoch's end: the array loaders' shuffle seed and epoch come
        # back too, so the next epochs draw the orders of the run that wrote the checkpoint.
        states, self.pending_loader_states = self.pending_loader_states, []
        loaders = self.trainer.train_dataloader
        flat = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        for loader, state in zip(flat, states):
            if callable(getattr(loader, "load_state_dict", None)):
                loader.load_state_dict(state)

    def _log_hyperparameters(self) -> None:
        """Send the compile arguments (as configs), the batch size and the epochs to the Trainer's loggers, once."""
        trainer = self.trainer
        fit_arguments, self.fit_arguments = self.fit_arguments, None
        if not trainer.loggers:
            return
        if fit_arguments is None:  # a plain Trainer: what its datamodule and max_epochs say
            datamodule = getattr(trainer, "datamodule", None)
            fit_arguments = {"batch_size": getattr(datamodule, "batch_size", None), "epochs": trainer.max_epochs}
        params = {k: v for k, v in self.hparams.items() if k in COMPILE_ARGUMENTS and v is not None}
        params.update({k: v for k, v in fit_arguments.items() if v is not None})
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Keras's batch logs (running means) reach the loggers as `batch_<name>` (Keras TensorBoard's
        # tags) on the steps Lightning logs (`log_every_n_steps`; 0, the bridge's default, is never).
        trainer = self.trainer
        if trainer.loggers and logging_due(trainer):
            logs = self.batch_logs(training=True)
            if logs:
                batch_logs = {f"batch_{k}": v for k, v in logs.items()}
                self.log_dict(batch_logs, on_step=True, on_epoch=False, sync_dist=False, batch_size=1)

    def on_train_end(self) -> None:
        # Keras copies EMA weights into the model when fit ends (use_ema=True).
        if self.keras_step is not None:
            self.keras_step.finish_fit(bool(self.trainer.max_epochs))
        for optimizer in self.trainer.optimizers:
            finalize = getattr(optimizer, "finalize_variable_values", None)
            if finalize is not None:
                finalize()

    def ordered_results(self, logs: Dict[str, float]) -> Any:
        """``evaluate``'s return value from its logs: a scalar, or a list in Keras's order."""
        if self.keras_step is not None:
            return self.keras_step.ordered_results(logs)
        names = ["loss"]
        if self.metric_plan is not None:
            names += self.metric_plan.base_names
        if self.loss_plan is not None:
            names += self.loss_plan.tracker_names
        results = [logs[n] for n in names if n in logs]
        results += [logs[k] for k in sorted(logs) if k not in names]
        return results[0] if len(results) == 1 else results

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> Any:
        self.require_compiled()
        if self.keras_step is not None:
            return None  # the model's own optimizers, applied by its train_step
        if isinstance(self.optimizer_spec, KerasNativeSpec):
            keras_model: Any = self.model
            params: List[Any] = list(keras_model.trainable_variables)
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        key = tuple(id(p) for p in params)
        # Keras keeps one optimizer per compile: momentum, step count and schedule position carry
        # over from one fit() to the next.
        if self._optimizer_cache is None or self._optimizer_cache[0] != key:
            optimizer, schedule = self.optimizer_spec.build(params)
            config: Any = optimizer
            if schedule is not None:
                config = {
                    "optimizer": optimizer,
                    "lr_scheduler": {"scheduler": KerasScheduleLR(optimizer, schedule), "interval": "step"},
                }
            self._optimizer_cache = (key, config)
        config = self._optimizer_cache[1]
        if self._pending_learning_rate is not None:
            set_learning_rate(config["optimizer"] if isinstance(config, dict) else config, self._pending_learning_rate)
            self._pending_learning_rate = None
        return config

    @property
    def learning_rate(self) -> float:
        """The compiled optimizer's learning rate, as Keras's ``model.optimizer.learning_rate``.

        Lightning's ``Tuner.lr_find`` reads it and sets its suggestion here; setting it sets the rate of
        the optimizer the next ``fit`` steps (refused with a clear error when a Keras schedule drives it).

        Example:
            >>> import torch
            >>> module = KerasModule(torch.nn.Linear(2, 1))
            >>> module.compile(optimizer="sgd", loss="mse")
            >>> module.learning_rate = 0.5
            >>> module.learning_rate
            0.5
        """
        return get_learning_rate(self._built_optimizer())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        set_learning_rate(self._built_optimizer(), value)
        # Kept until the next configure_optimizers too: Lightning before 2.5 restores the optimizer's state
        # (hence its old rate) after lr_find sets the suggestion.
        self._pending_learning_rate = float(value)

    def _built_optimizer(self) -> torch.optim.Optimizer:
        config = self.configure_optimizers()  # built once per compile and parameter set, then cached
        return config["optimizer"] if isinstance(config, dict) else config

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.is_keras and not isinstance(self.optimizer_spec, KerasNativeSpec):
            # A Keras optimizer applies weight constraints after each update; a torch optimizer does not.
            for variable in self._constrained_variables():
                variable.assign(variable.constraint(variable))

    def _constrained_variables(self) -> List[Any]:
        keras_model: Any = self.model
        variables = keras_model.trainable_variables
        return [v for v in variables if getattr(v, "constraint", None) is not None]

    # ------------------------------------------------------------------ state
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Add the bridge's entry (compile arguments, model description) to a Lightning checkpoint.

        See :mod:`keras_bridge.saving.lightning_checkpoint`.
        """
        if self.keras_step is not None:
            self.keras_step.refuse_lightning_checkpoint()
        checkpoint[KEY] = checkpoint_entry(self)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Compile from a Lightning checkpoint's entry and match a Keras model's variable names.

        Lightning calls it from ``load_from_checkpoint`` and ``trainer.fit(ckpt_path=...)``; see
        :mod:`keras_bridge.saving.lightning_checkpoint`.
        """
        restore_from_checkpoint(self, checkpoint)

    def get_extra_state(self) -> Any:
        # Travels with state_dict, hence back from ddp_spawn workers and into checkpoints.
        history = getattr(self.history, "history", None)
        epochs = getattr(self.history, "epoch", None)
        epoch = self._train_logs_epoch
        if history is not None and self._train_logs is not None and epoch not in (epochs or []):
            # Written at an epoch end before History recorded it (by a Keras callback, which runs before
            # History): the checkpoint holds that epoch too, so a resume continues the History exactly.
            history = {k: list(v) for k, v in history.items()}
            for key, value in self._train_logs.items():
                history.setdefault(key, []).append(value)
            epochs = [*(epochs or []), epoch]
        paths = [v.path for v in self.model.variables] if self.is_keras else None  # type: ignore[union-attr]
        return {"history": history, "epoch": epochs, "keras_variable_paths": paths}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """The module's ``load_state_dict``, matching another instance's Keras variable paths by position.

        Lightning loads a ``ddp_spawn`` worker's weights back with ``strict=False``: without the match, a
        subclassed Keras model rebuilt in the worker would silently load nothing.
        """
        return super().load_state_dict(match_keras_state(self, state_dict), strict=strict, assign=assign)

    def set_extra_state(self, state: Any) -> None:
        if not state or state.get("history") is None:
            return
        if self.history is None:
            self.history = import_keras().callbacks.History()
        self.history.history = state["history"]
        self.history.epoch = state["epoch"] or []

    # ------------------------------------------------------------------ Keras-style API
    # The entry points are the engine's functions, bound as methods: one signature, one docstring each.
    fit = engine.fit
    evaluate = engine.evaluate
    predict = engine.predict
    train_on_batch = on_batch.train_on_batch
    test_on_batch = on_batch.test_on_batch
    predict_on_batch = on_batch.predict_on_batch
