"""Training state as plain data: model tensors, optimizer and LR-scheduler state, in HDF5, without pickle.

What :mod:`keras_bridge.saving.formats` and ``BackupAndRestore`` store, and how it lands back on a model:

* model tensors: a torch module's ``state_dict``; for a Keras model its variables by position in
  ``model.variables`` (Keras's auto-generated layer names differ between two instances of one model);
* the running torch optimizer's ``state_dict``, its parameters renumbered by the same structural
  position, and the LR scheduler's ``state_dict`` (e.g. the Keras schedule's step);
* each nested state as one HDF5 group: the structure as JSON, one dataset per tensor.

Example:
    >>> import io, h5py, torch
    >>> buffer = io.BytesIO()
    >>> with h5py.File(buffer, "w") as f:
    ...     write_tree(f, "opt", {"state": {0: {"step": torch.tensor(3.0)}}, "lr": 0.1})
    >>> with h5py.File(buffer, "r") as f:
    ...     read_tree(f, "opt")
    {'state': {0: {'step': tensor(3.)}}, 'lr': 0.1}
"""

from __future__ import annotations

import io
import json
import warnings
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, cast

import h5py
import numpy as np
import torch

import keras_bridge.saving.serialization as S
from keras_bridge.utils.compat import attached_trainer

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from keras_bridge.protocols import CallbackHost


# ---------------------------------------------------------------------------- nested states in HDF5
def write_tree(parent: Any, name: str, obj: object) -> None:
    """Store a nested state (dicts, lists, tensors, numbers) as group ``name``: JSON + one dataset per tensor."""
    arrays: List[torch.Tensor] = []
    tree = S.flatten_state(obj, arrays)
    group = parent.create_group(name)
    group.attrs["tree"] = json.dumps(tree)
    dtypes = []
    for i, t in enumerate(arrays):
        dtypes.append(str(t.dtype).replace("torch.", ""))
        data = t.float() if t.dtype == torch.bfloat16 else t  # HDF5 has no bfloat16
        group.create_dataset(str(i), data=data.numpy())
    group.attrs["dtypes"] = json.dumps(dtypes)


def read_tree(parent: Any, name: str) -> Any:
    """Inverse of :func:`write_tree`."""
    group = parent[name]
    dtypes = json.loads(group.attrs["dtypes"])
    arrays = [torch.from_numpy(np.array(group[str(i)])).to(getattr(torch, dt)) for i, dt in enumerate(dtypes)]
    return S.unflatten_state(json.loads(group.attrs["tree"]), arrays)


def states_to_bytes(states: Mapping[str, Any]) -> bytes:
    """An in-memory HDF5 file with one :func:`write_tree` group per entry."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in states.items():
            write_tree(f, key, value)
    return buffer.getvalue()


def states_for_pickle(states: Optional[Mapping[str, Any]]) -> Optional[bytes]:
    """:func:`states_to_bytes` of the optimizer states a pickled module sends along, or None (said) when it cannot.

    A value that is neither a tensor nor plain data (a custom optimizer's) cannot be sent: the copy's next fit
    then starts its optimizer afresh, which a warning says rather than the pickle failing.
    """
    if not states:
        return None
    try:
        return states_to_bytes(states)
    except S.NotSerializable as err:
        warnings.warn(
            f"The optimizer's state cannot travel with the pickled KerasModule ({err}); the copy's next fit (in a "
            "process `ddp_spawn` started, say) starts the optimizer afresh instead of continuing it.",
            stacklevel=3,
        )
        return None


def states_from_bytes(data: bytes) -> Dict[str, Any]:
    """Inverse of :func:`states_to_bytes`."""
    with h5py.File(io.BytesIO(data), "r") as f:
        return {k: read_tree(f, k) for k in f.keys()}


# ---------------------------------------------------------------------------- model tensors
def model_state(module: CallbackHost) -> Dict[str, torch.Tensor]:
    """The wrapped model's tensors (see the module docstring for the Keras-model keys)."""
    if not module.is_keras:
        return {k: v.detach().cpu() for k, v in module.model.state_dict().items()}
    return {f"{i:05d}:{v.path}": v.value.detach().cpu().clone() for i, v in enumerate(module.model.variables)}


def load_model_state(module: CallbackHost, state: Mapping[str, torch.Tensor], source: str = "the file") -> None:
    """Inverse of :func:`model_state`.

    Raises:
        ValueError: a Keras model with another number of variables.
        RuntimeError: a torch module whose ``state_dict`` does not match (strict loading).
    """
    if not module.is_keras:
        module.model.load_state_dict(state)
        return
    variables = module.model.variables
    if len(state) != len(variables):
        raise ValueError(f"{source} holds {len(state)} variables, the model has {len(variables)}.")
    for variable, key in zip(variables, sorted(state)):
        variable.assign(state[key])


# ---------------------------------------------------------------------------- optimizer and scheduler
def _positions(module: CallbackHost, optimizer: torch.optim.Optimizer) -> Optional[List[int]]:
    """For each optimizer parameter, its position in the model's structural order (None if unknown).

    A torch optimizer's ``state_dict`` numbers parameters in its own order; for a Keras model that is
    the order of Keras's auto-generated names, which differs between instances. Saving by structural
    position makes the state land on the same weights in any instance.
    """
    tensors = [v.value for v in module.model.variables] if module.is_keras else list(module.model.parameters())
    where = {id(t): i for i, t in enumerate(tensors)}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return [where[id(p)] for p in params] if all(id(p) in where for p in params) else None


def _renumber(state: Dict[str, Any], mapping: Mapping[int, int]) -> Dict[str, Any]:
    groups = [dict(g, params=[mapping[i] for i in g["params"]]) for g in state["param_groups"]]
    return {"state": {mapping[i]: v for i, v in state["state"].items()}, "param_groups": groups}


def optimizer_states(module: CallbackHost, optimizer: torch.optim.Optimizer, scheduler: Any = None) -> Dict[str, Any]:
    """``optimizer``'s (and ``scheduler``'s) ``state_dict()`` as a file keeps them: by structural position."""
    positions = None if hasattr(optimizer, "keras_optimizer") else _positions(module, optimizer)
    state: Dict[str, Any] = {"optimizer": optimizer.state_dict()}
    # A Keras optimizer's variables are already in the model's structural order.
    if positions is not None:
        state["optimizer"] = _renumber(state["optimizer"], dict(enumerate(positions)))
        state["optimizer_by_position"] = True
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    return state


def training_state(module: CallbackHost) -> Dict[str, Any]:
    """The optimizer's and LR scheduler's ``state_dict()``: the running fit's, else those its next fit would continue.

    Outside a fit (after ``evaluate`` or ``predict``, whose Trainers hold no optimizer; in the process a
    ``ddp_spawn`` fit returned to) that is the optimizer the last fit built, or a state restored from a file or
    sent back and not loaded yet; empty before any.
    """
    trainer = attached_trainer(module)
    if trainer is not None and trainer.optimizers:
        configs = trainer.lr_scheduler_configs
        return optimizer_states(module, trainer.optimizers[0], configs[0].scheduler if configs else None)
    cache = getattr(module, "optimizer_cache", None)
    if cache is None:
        return {}
    return dict(cache.states_to_send(lambda: optimizer_states(module, cache.optimizer, cache.scheduler)) or {})


def apply_training_state(trainer: pl.Trainer, states: Mapping[str, Any], module: Optional[CallbackHost] = None) -> None:
    """Load saved optimizer/scheduler states into the running Trainer's first optimizer and scheduler.

    Raises:
        ValueError: the saved optimizer state does not fit the model's parameters.
    """
    if "optimizer" in states and trainer.optimizers:
        optimizer, state = trainer.optimizers[0], states["optimizer"]
        if states.get("optimizer_by_position"):
            host = module if module is not None else cast("CallbackHost", trainer.lightning_module)
            positions = _positions(host, optimizer)
            if positions is None:
                raise ValueError("The saved optimizer state does not fit this model's parameters.")
            state = _renumber(state, {pos: i for i, pos in enumerate(positions)})
        optimizer.load_state_dict(state)
    if "scheduler" in states and trainer.lr_scheduler_configs:
        trainer.lr_scheduler_configs[0].scheduler.load_state_dict(states["scheduler"])
