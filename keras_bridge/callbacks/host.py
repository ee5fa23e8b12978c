"""What the Keras-callback driver needs from the module it runs on: one protocol, two providers.

:class:`CallbackHost` lists it: the object Keras callbacks get as ``self.model``, Keras's batch and
epoch logs, the weights, and the ``History`` slot. A :class:`~keras_bridge.KerasModule` provides all
of it itself (its trackers compute Keras's running means). Any other ``LightningModule`` is served by a
:class:`LoggedMetricsHost`, which reads the logs from what the module logs with ``self.log`` (the
values Lightning hands its own callbacks) and offers Keras's model methods over the module's
``state_dict``. :func:`callback_host` picks between them, so the driver has one code path.

Example:
    >>> import torch, lightning.pytorch as pl
    >>> class Net(pl.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.dense = torch.nn.Linear(3, 1)
    >>> host = callback_host(Net())
    >>> type(host).__name__, [w.shape for w in host.get_weights()]
    ('LoggedMetricsHost', [(1, 3), (1,)])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Protocol, cast, runtime_checkable

from keras_bridge.callbacks.model_facade import TorchModelFacade
from keras_bridge.model_methods import KerasModelMethods
from keras_bridge.protocols import CallbackHost
from keras_bridge.utils.compat import attached_trainer, stage_logged_values

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["CallbackHost", "LoggedMetricsHost", "callback_host", "logged_floats"]

# Lightning names an aggregate logged both per step and per epoch `<name>_step` / `<name>_epoch` beside
# `<name>`: Keras's logs carry `<name>` once.
_FORK_SUFFIXES = ("_step", "_epoch")


@runtime_checkable
class _ComputesKerasLogs(Protocol):
    """The methods that tell a module which computes Keras's logs itself (checked at run time).

    Methods only: Python 3.12 checks a protocol's members on the class, where a ``KerasModule``'s
    submodule ``model`` is not.
    """

    def batch_logs(self, training: bool = True) -> Dict[str, float]: ...

    def finish_train_epoch(self) -> Dict[str, float]: ...

    def finish_eval_epoch(self) -> Dict[str, float]: ...


def logged_floats(values: Mapping[str, Any]) -> Dict[str, float]:
    """Logged values (tensors or numbers) as floats, each name once, sorted as Keras's epoch logs.

    Example:
        >>> import torch
        >>> logged_floats({"loss": torch.tensor(0.5), "loss_epoch": torch.tensor(0.5), "acc_step": 1})
        {'acc_step': 1.0, 'loss': 0.5}
    """
    out: Dict[str, float] = {}
    for name, value in values.items():
        if any(name.endswith(s) and name[: -len(s)] in values for s in _FORK_SUFFIXES):
            continue
        out[name] = float(value.item() if hasattr(value, "item") else value)
    return dict(sorted(out.items()))


class LoggedMetricsHost(KerasModelMethods):
    """A plain ``LightningModule`` as Keras callbacks see it: logs from ``self.log``, weights from ``state_dict``.

    * Batch logs: the values the module logged for this training batch (``on_step``), by the names it
      logged them under; validation batches have none unless logged with ``on_step=True``.
    * Epoch logs: what the module logged in this epoch's training and validation, as
      ``trainer.callback_metrics`` holds it when the epoch ends (what Lightning's own ``EarlyStopping``
      reads: epoch aggregates, or the last step's value of what is logged per step only), each name
      once. Nothing from an earlier epoch: no ``val_*`` on epochs without validation (as in Keras), and
      what the module logs in its own ``on_train_epoch_end`` (which runs after the Keras callbacks) is not
      seen.
    * ``self.model``: a :class:`~keras_bridge.callbacks.TorchModelFacade` of the module
      (``stop_training``, ``optimizer.learning_rate`` over the Trainer's first optimizer, ``get_weights``
      / ``set_weights`` in ``state_dict`` order, ``save`` / ``save_weights`` / ``load_weights`` in the
      bridge's torch formats: ``.weights.h5``, ``.weights.pt``, ``.ckpt``, ``.keras``).

    Args:
        module: the ``LightningModule``.
    """

    is_keras = False
    compiled = False  # what a saved `.keras` archive records: no compile() arguments
    declared_output_names: Optional[List[str]] = None
    input_names: Optional[List[str]] = None

    def __init__(self, module: pl.LightningModule) -> None:
        self.model = module
        self.history: Any = None
        self._facade: Optional[TorchModelFacade] = None
        self._val_logged: Dict[str, Any] = {}  # what the last validation logged, as logged
        self._val_epoch: Optional[int] = None

    @property
    def _trainer(self) -> Any:
        # The savers and the optimizer facade find the running Trainer through the module they are given.
        return attached_trainer(self.model)

    @property
    def callback_model(self) -> TorchModelFacade:
        if self._facade is None:
            self._facade = TorchModelFacade(self)
        return self._facade

    def batch_logs(self, training: bool = True) -> Dict[str, float]:
        trainer = self._trainer
        return logged_floats(stage_logged_values(trainer, on_step=True)) if trainer is not None else {}

    def finish_eval_epoch(self) -> Dict[str, float]:
        trainer = self._trainer
        logged = stage_logged_values(trainer, on_step=False) if trainer is not None else {}
        if trainer is not None and trainer.state.fn == "fit":
            self._val_logged, self._val_epoch = logged, trainer.current_epoch
        return logged_floats(logged)

    def finish_train_epoch(self) -> Dict[str, float]:
        trainer = self._trainer
        if trainer is None:
            return {}
        # What the training stage logged this epoch (Lightning resets its results each epoch, so nothing
        # is left from an earlier one): the epoch aggregates over the last step values, as in
        # `trainer.callback_metrics`, and what this epoch's validation logged, if it ran.
        logged = {**stage_logged_values(trainer, on_step=True), **stage_logged_values(trainer, on_step=False)}
        if self._val_epoch == trainer.current_epoch:
            logged.update(self._val_logged)
        return logged_floats(logged)

    def __repr__(self) -> str:
        return f"LoggedMetricsHost({type(self.model).__name__})"


def callback_host(module: pl.LightningModule) -> CallbackHost:
    """The :class:`CallbackHost` of a ``LightningModule``: the module itself if it is one, else its logs' view.

    Args:
        module: the module the Trainer runs.
    """
    if isinstance(module, _ComputesKerasLogs):
        return cast(CallbackHost, module)  # a KerasModule: the rest of the protocol comes with these
    return LoggedMetricsHost(module)
