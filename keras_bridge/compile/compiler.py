"""``KerasModule.compile`` resolved: configs to objects, loss and metric plans, the optimizer path, Keras's own compile.

One ``compile()`` gives one :class:`CompileResult`, which the module takes whole (nothing of a compile
that raises is kept):

:func:`compile` (``KerasModule.compile``) and :func:`require_compiled` take a result into the module.

* :func:`compile_for_bridge`: the bridge trains with the arguments. Keras configs become the objects
  (:mod:`keras_bridge.configs`); Keras's re-compile rules keep the previous loss when ``loss`` is not
  given and the previous metrics when neither ``metrics`` nor ``weighted_metrics`` is; a Keras model
  with a Keras optimizer keeps it (:class:`~keras_bridge.optimizers.keras_native.KerasNativeSpec`) and
  is compiled by Keras with the arguments Keras takes, so plain Keras finds it compiled as the user
  compiled it; any other optimizer is resolved by :func:`keras_bridge.optimizers.resolve.get_optimizer`.
* :func:`compile_for_keras_steps`: the model's own compile ran (see
  :mod:`keras_bridge.compile.keras_compile`); its own steps train it.

Example:
    >>> import torch
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> result = compile_for_bridge(module, **bind_compile_arguments(("sgd", "mse"), {}))
    >>> result.loss_plan.arguments["loss"], result.hparams["jit_compile"]
    ('mse', 'auto')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, MutableMapping, Optional, Union

from keras_bridge.capture import CapturedForward
from keras_bridge.compile.keras_args import split_keras_arguments
from keras_bridge.compile.keras_compile import bind_compile_arguments, check_keras_options, compiled_by_keras
from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.tracking import KerasHooks
from keras_bridge.configs import COMPILE_ARGUMENTS, compile_config, resolve_compile_arguments
from keras_bridge.optimizers.keras_native import KerasNativeSpec, keras_optimizer_for
from keras_bridge.optimizers.resolve import get_optimizer
from keras_bridge.trainer.keras_step import KerasSteps
from keras_bridge.utils.errors import NotCompiledError

if TYPE_CHECKING:
    import keras

    from keras_bridge.protocols import BridgeModule

__all__ = [
    "CompileResult",
    "compile",
    "compile_for_bridge",
    "compile_from_constructor",
    "compile_for_keras_steps",
    "keep_keras_optimizer_only",
    "require_compiled",
    "set_compile_hparams",
]


@dataclass
class CompileResult:
    """What one ``compile()`` sets on the module.

    ``keras_step`` is set when the model's own steps train it (then the plans and the optimizer spec are
    ``None``); ``hparams`` holds the compile arguments as configs (none when one cannot be described)
    and ``jit_compile``.
    """

    loss_plan: Optional[LossPlan] = None
    metric_plan: Optional[MetricPlan] = None
    optimizer_spec: Any = None
    capture: Optional[CapturedForward] = None
    keras_step: Optional[KerasSteps] = None
    # compile() arguments Keras cannot take (torch losses, torchmetrics), left out of the Keras model's compile.
    keras_incompatible_arguments: List[str] = field(default_factory=list)
    hparams: Dict[str, Any] = field(default_factory=dict)


def compile(module: BridgeModule, *args: Any, **kwargs: Any) -> None:
    """Configure training the Keras way: Keras's ``compile(optimizer="rmsprop", loss=None, loss_weights=None,
    metrics=None, weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
    auto_scale_loss=True)``.

    Args:
        module: the module (``self``).
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
    if module.is_keras and compiled_by_keras(module.model, kwargs.get("auto_scale_loss", True)):
        module.model.compile(*args, **kwargs)
        module.apply_compile(compile_for_keras_steps(module.model))
        return
    module.apply_compile(compile_for_bridge(module, **bind_compile_arguments(args, kwargs)))


def compile_from_constructor(
    module: BridgeModule,
    optimizer: Any,
    loss: Any,
    loss_weights: Any,
    metrics: Any,
    weighted_metrics: Any,
    jit_compile: Union[bool, str],
) -> None:
    """Compile with the constructor's arguments when any but ``jit_compile`` is given (``optimizer`` then
    defaults to ``"rmsprop"``).
    """
    arguments = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights}
    arguments.update(metrics=metrics, weighted_metrics=weighted_metrics)
    if any(v is not None for v in arguments.values()):
        if optimizer is None:
            arguments["optimizer"] = "rmsprop"
        module.compile(**arguments, jit_compile=jit_compile)


def require_compiled(module: BridgeModule) -> None:
    """Raise :class:`~keras_bridge.utils.errors.NotCompiledError` unless ``compile()`` was called.

    A Keras model compiled by Keras before it was wrapped is trained as Keras compiled it.
    """
    if not module.compiled and module.is_keras and getattr(module.model, "compiled", False):
        module.apply_compile(compile_for_keras_steps(module.model))
    if not module.compiled:
        raise NotCompiledError(
            "You must call `compile()` before using the model: call "
            "module.compile(optimizer=..., loss=..., metrics=...) before fit() or evaluate()."
        )


def compile_for_bridge(
    module: BridgeModule,
    optimizer: Any,
    loss: Any,
    loss_weights: Any,
    metrics: Any,
    weighted_metrics: Any,
    run_eagerly: bool,
    steps_per_execution: int,
    jit_compile: Union[bool, str],
    auto_scale_loss: bool,
) -> CompileResult:
    """The bridge's compile of ``module`` with Keras's arguments (see the module docstring).

    Raises:
        ValueError: an option Keras refuses, a bad config, a loss or metric the plans refuse, or an output
            name that does not exist.
    """
    is_keras = module.is_keras
    jit_compile = check_keras_options(run_eagerly, steps_per_execution, jit_compile, auto_scale_loss, is_keras)
    if loss is None and module.loss_plan is not None:
        # Keras keeps the compiled loss (and its weights) when a new compile gives none.
        loss, loss_weights = module.loss_plan.arguments["loss"], module.loss_plan.arguments["loss_weights"]
    # Keras configs (serialize_keras_object output, or the bridge's saved form) become the objects.
    given = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights}
    resolved = resolve_compile_arguments({**given, "metrics": metrics, "weighted_metrics": weighted_metrics})
    optimizer, loss, loss_weights = resolved["optimizer"], resolved["loss"], resolved["loss_weights"]
    metrics, weighted_metrics = resolved["metrics"], resolved["weighted_metrics"]
    result = CompileResult()
    # A model whose own compute_loss/compute_metrics run each step reads model.losses: it runs eagerly.
    if is_keras and jit_compile and KerasHooks.detect(module.model, False) is None:
        result.capture = CapturedForward(module.model, compile_graphs=jit_compile is True)
    keras_optimizer = keras_optimizer_for(optimizer) if is_keras else None
    # A Keras model keeps its Keras optimizer: Keras's own update, state and learning rate.
    result.optimizer_spec = (
        KerasNativeSpec(keras_optimizer) if keras_optimizer is not None else get_optimizer(optimizer)
    )
    result.loss_plan = LossPlan(loss, loss_weights)
    if metrics is not None or weighted_metrics is not None or module.metric_plan is None:
        result.metric_plan = MetricPlan(metrics, weighted_metrics)
    else:  # Keras keeps the previous compiled metrics when neither argument is given.
        result.metric_plan = MetricPlan(**module.metric_plan.arguments)
    if module.declared_output_names and is_keras:
        result.loss_plan.check_names(module.declared_output_names)
        result.metric_plan.check_names(module.declared_output_names)
    arguments = {**result.loss_plan.arguments, **result.metric_plan.arguments}
    if keras_optimizer is not None:
        # Plain Keras then finds the model compiled as the user compiled it: model.optimizer is the
        # optimizer the bridge steps, and model.save writes Keras's compile config and optimizer state.
        kept, result.keras_incompatible_arguments = split_keras_arguments(arguments)
        keras_model: Any = module.model
        keras_model.compile(optimizer=keras_optimizer, **kept, run_eagerly=run_eagerly, auto_scale_loss=auto_scale_loss)
    result.hparams = {**(compile_config({"optimizer": optimizer, **arguments}) or {}), "jit_compile": jit_compile}
    return result


def compile_for_keras_steps(model: keras.Model) -> CompileResult:
    """The model's own compile ran: its steps train it, with its optimizers, losses and metrics."""
    return CompileResult(keras_step=KerasSteps(model))


def set_compile_hparams(hparams: MutableMapping[str, Any], compiled: Mapping[str, Any]) -> None:
    """Replace the last compile's arguments among the module's hyperparameters with ``compiled``."""
    for name in COMPILE_ARGUMENTS:
        hparams.pop(name, None)
    hparams.update(compiled)


def keep_keras_optimizer_only(module: BridgeModule, reason: BaseException) -> None:
    """Compile the Keras model with its optimizer only, when Keras refuses arguments the bridge accepts.

    The bridge trains with the arguments as given; plain Keras then finds the model compiled without
    a loss or metrics (``model.optimizer`` is still the trained optimizer). Said once, with Keras's reason.
    """
    assert module.loss_plan is not None and module.metric_plan is not None
    keras_model: Any = module.model
    optimizer = keras_model.optimizer
    module.keras_incompatible_arguments = sorted({**module.loss_plan.arguments, **module.metric_plan.arguments})
    keras_model.compile(optimizer=optimizer)
    warnings.warn(
        "The Keras model itself is compiled with the optimizer only: Keras's compile cannot take the "
        f"`loss`/`metrics` arguments the bridge trains with ({str(reason).splitlines()[0]}). Plain "
        "`model.evaluate`/`model.fit` will need `model.compile(...)` again.",
        stacklevel=4,
    )
