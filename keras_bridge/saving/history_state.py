"""The ``History`` of a :class:`~keras_bridge.KerasModule` as the module's extra state.

The extra state travels with the module's ``state_dict``: back from ``ddp_spawn`` workers, and into
Lightning checkpoints (next to the bridge's entry, :mod:`keras_bridge.saving.lightning_checkpoint`). It
holds the History's values and epochs, and a Keras model's variable paths in structural order (which
:func:`~keras_bridge.saving.lightning_checkpoint.match_keras_state` maps by position onto another
instance's); from a process a spawning launcher started, also the optimizer's state when its fit ended
(``module.launcher_states``), which the launching process loads at its next fit. :func:`extra_state` and
:func:`load_extra_state` are ``KerasModule.get_extra_state`` and ``KerasModule.set_extra_state``.

Example:
    >>> import torch
    >>> from keras_bridge import KerasModule
    >>> module = KerasModule(torch.nn.Linear(3, 1))
    >>> load_extra_state(module, {"history": {"loss": [0.5]}, "epoch": [0]})
    >>> module.history.history, extra_state(module)["epoch"]
    ({'loss': [0.5]}, [0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional

from keras_bridge.callbacks.history import new_history

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

__all__ = ["extra_state", "load_extra_state"]


def extra_state(module: BridgeModule) -> Dict[str, Any]:
    """The History's values and epochs, and a Keras model's variable paths."""
    history = getattr(module.history, "history", None)
    epochs = getattr(module.history, "epoch", None)
    logs, epoch = module.epoch_logs.train, module.epoch_logs.train_epoch
    if history is not None and logs is not None and epoch not in (epochs or []):
        # Written at an epoch end before History recorded it (by a Keras callback, which runs before
        # History): the checkpoint holds that epoch too, so a resume continues the History exactly.
        history = {k: list(v) for k, v in history.items()}
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        epochs = [*(epochs or []), epoch]
    paths = [v.path for v in module.model.variables] if module.is_keras else None  # type: ignore[union-attr]
    state = {"history": history, "epoch": epochs, "keras_variable_paths": paths}
    if module.launcher_states:
        state["training_state"] = module.launcher_states
    return state


def load_extra_state(module: BridgeModule, state: Optional[Dict[str, Any]]) -> None:
    """Restore the History from :func:`extra_state`'s output (a module without one gets a ``History``).

    The optimizer's state a spawned process sent back waits for the next fit (as one read from a file).
    """
    if state and state.get("training_state"):
        module.restore_training_state(state["training_state"])
    if not state or state.get("history") is None:
        return
    if module.history is None:
        module.history = new_history()
    module.history.history = state["history"]
    module.history.epoch = state["epoch"] or []
