"""``compile()`` with Keras's contract: which compiles Keras itself runs, and the Keras-only arguments.

A Keras model whose class defines its own ``compile`` (a GAN's ``compile(d_optimizer, g_optimizer,
loss_fn)``) or its own ``train_step`` / ``test_step`` / ``predict_step``, or a Keras model that
Keras's ``compile`` wraps in a ``LossScaleOptimizer`` (a ``mixed_float16`` policy with
``auto_scale_loss=True``), is compiled by the model itself with the arguments as the user wrote them,
and trained with its own steps (:mod:`keras_bridge.trainer.keras_step`). So is a Keras model that
arrives already compiled by Keras.

``run_eagerly``, ``steps_per_execution``, ``jit_compile`` and ``auto_scale_loss`` keep Keras's
meaning (:func:`check_keras_options`).

Example:
    >>> check_keras_options(run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True)
    'auto'
    >>> check_keras_options(run_eagerly=False, steps_per_execution=4, jit_compile="auto", auto_scale_loss=True)
    Traceback (most recent call last):
    ...
    ValueError: `steps_per_execution` must be 1 with the PyTorch backend. Received: steps_per_execution=4
"""

from __future__ import annotations

import numbers
import warnings
from typing import TYPE_CHECKING, Any, Dict, Tuple, Union

from keras_bridge.trainer.keras_step import runs_keras_steps

if TYPE_CHECKING:
    import keras

#: The arguments of the bridge's own compile, in Keras's order.
COMPILE_PARAMETERS = (
    "optimizer", "loss", "loss_weights", "metrics", "weighted_metrics",
    "run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss",
)  # fmt: skip
_DEFAULTS: Dict[str, Any] = {
    "optimizer": "rmsprop", "loss": None, "loss_weights": None, "metrics": None, "weighted_metrics": None,
    "run_eagerly": False, "steps_per_execution": 1, "jit_compile": "auto", "auto_scale_loss": True,
}  # fmt: skip


def bind_compile_arguments(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``compile``'s arguments by name, defaults filled in, as Python binds Keras's ``compile(...)``.

    Raises:
        TypeError: too many positional arguments, an unknown keyword or one given twice.
    """
    if len(args) > len(COMPILE_PARAMETERS):
        raise TypeError(
            f"compile() takes at most {len(COMPILE_PARAMETERS)} positional arguments "
            f"({', '.join(COMPILE_PARAMETERS)}). Received: {len(args)} positional arguments"
        )
    bound = dict(_DEFAULTS)
    bound.update(zip(COMPILE_PARAMETERS, args))
    for name, value in kwargs.items():
        if name not in _DEFAULTS:
            raise TypeError(
                f"compile() got an unexpected keyword argument {name!r}. Accepted: {', '.join(COMPILE_PARAMETERS)} "
                "(a Keras model whose class defines its own `compile` receives its own arguments)."
            )
        if name in COMPILE_PARAMETERS[: len(args)]:
            raise TypeError(f"compile() got multiple values for argument {name!r}")
        bound[name] = value
    return bound


def check_keras_options(run_eagerly: object, steps_per_execution: object, jit_compile: Union[bool, str],
                        auto_scale_loss: object, is_keras: bool = True) -> Any:  # fmt: skip
    """Check Keras's execution options of ``compile`` and return the ``jit_compile`` to use.

    ``run_eagerly=True`` turns ``jit_compile=True`` off (with Keras's warning). A ``steps_per_execution``
    above 1 is refused with Keras's own message: Keras's torch backend refuses it too. ``jit_compile=True``
    compiles a Keras model's captured forward pass; a torch module (``is_keras=False``) is refused it.
    """
    for name, value in (("run_eagerly", run_eagerly), ("auto_scale_loss", auto_scale_loss)):
        if not isinstance(value, bool):
            raise ValueError(f"Expected `{name}` to be True or False. Received: {name}={value!r}")
    if jit_compile not in ("auto", True, False):
        raise ValueError(f"Expected `jit_compile` to be 'auto', True or False. Received: jit_compile={jit_compile!r}")
    if (
        isinstance(steps_per_execution, bool)
        or not isinstance(steps_per_execution, numbers.Integral)
        or int(steps_per_execution) < 1
    ):
        raise ValueError(
            "Expected `steps_per_execution` to be an integer >= 1. "
            f"Received: steps_per_execution={steps_per_execution!r}"
        )
    if int(steps_per_execution) > 1:
        raise ValueError(
            "`steps_per_execution` must be 1 with the PyTorch backend. "
            f"Received: steps_per_execution={steps_per_execution}"
        )
    if jit_compile is True and not is_keras and not run_eagerly:
        raise ValueError(
            "`jit_compile=True` compiles a Keras model's forward pass; the bridge does not compile a torch module. "
            "Use `torch.compile(module.model)` before `fit`, or jit_compile='auto'. Received: jit_compile=True"
        )
    if run_eagerly and jit_compile is True:
        warnings.warn("If `run_eagerly` is True, then `jit_compile` cannot also be True. Disabling `jit_compile`.",
                      stacklevel=3)  # fmt: skip
    return False if run_eagerly else jit_compile


def compiled_by_keras(model: keras.Model, auto_scale_loss: bool = True) -> bool:
    """Whether ``compile`` on this Keras model is the model's own business (see the module docstring)."""
    if runs_keras_steps(model):
        return True
    policy = getattr(getattr(model, "dtype_policy", None), "name", None)
    return bool(auto_scale_loss) and policy == "mixed_float16"
