"""The little the data loaders need from the process group: rank, world size, a shared seed, step counts.

Every function here is a no-op without an initialised process group, and a collective with one: call
it on every process. The loaders look the group up at iteration time, because it does not exist yet
when ``fit`` builds them.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T")

#: World size of the Trainer of the ``fit`` / ``evaluate`` / ``predict`` call running in this process, set
#: by the trainer connector for the call; None outside calls (and in a ``ddp_spawn`` worker): trust the group.
_run_world: Optional[int] = None


def set_run_world(world: Optional[int]) -> Optional[int]:
    """Declare the world size of the Trainer about to run (1: ignore a process group left by an earlier run).

    After a ``ddp`` ``fit``, the process group stays initialised in every process; a 1-device
    ``evaluate`` / ``predict`` on one process alone must then shard nothing and sync nothing.
    Returns the previous value (to restore after the call).
    """
    global _run_world
    previous, _run_world = _run_world, world
    return previous


def group_in_use() -> bool:
    """True when the current run is distributed (the processes must take part in its collectives)."""
    return rank_world()[1] > 1


def rank_world() -> Tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one or in a 1-process run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and _run_world != 1:
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def process_rank() -> int:
    """This process's global rank in a multi-process run, 0 outside one (``kb.process_rank()``).

    Read from the process group when one exists, otherwise from the launcher's environment
    (``RANK`` from torchrun, ``SLURM_PROCID`` under SLURM, ``NODE_RANK`` / ``LOCAL_RANK`` from
    Lightning's ``ddp`` launcher), so it answers before ``fit`` starts and after it ends.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit() and (name != "SLURM_PROCID" or "SLURM_NTASKS" in os.environ):
            return int(os.environ[name])
    local, node = int(os.environ.get("LOCAL_RANK", "0") or 0), int(os.environ.get("NODE_RANK", "0") or 0)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or local + 1
    return node * per_node + local


def is_main_process() -> bool:
    """True on the one process that should print, save or report after ``fit`` (``kb.is_main_process()``).

    Lightning's ``ddp`` launcher and torchrun run the whole script on every process: guard code that
    must run once with ``if kb.is_main_process():``. Under ``ddp_spawn`` the launching process is the
    main one (History and weights come back to it), and a 1-process run is always main.
    """
    return process_rank() == 0


def shared_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every process, so that all draw the same shuffles (a collective under DDP)."""
    return int(from_rank0(seed))


def from_rank0(value: T) -> T:
    """Rank 0's ``value`` (any picklable object) on every process: a shuffle drawn once, used by all.

    A collective under DDP; ``value`` itself on one process.

    Example:
        >>> from_rank0([2, 0, 1])
        [2, 0, 1]
    """
    _, world = rank_world()
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def max_across_ranks(value: int) -> int:
    """The largest ``value`` over all processes (a collective under DDP)."""
    _, world = rank_world()
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


class GlobalBatchInfo:
    """Rides at the end of a batch under DDP: the size of the global batch this shard belongs to.

    The module scales each process's loss by ``world * n_local / n_global`` so that DDP's gradient
    average equals the gradient of Keras's ``sum(w * l) / n_global`` even for an uneven last batch.
    """

    __slots__ = ("global_size", "world_size")

    def __init__(self, global_size: int, world_size: int) -> None:
        self.global_size = global_size
        self.world_size = world_size


def split_batch_info(batch: object) -> Tuple[Any, Optional[GlobalBatchInfo]]:
    """``(batch, info)``: the batch without the :class:`GlobalBatchInfo` riding at its end (``None`` when none does).

    Example:
        >>> split_batch_info((1, 2, GlobalBatchInfo(8, 2)))[0], split_batch_info((1, 2))
        ((1, 2), ((1, 2), None))
    """
    if isinstance(batch, tuple) and batch and isinstance(batch[-1], GlobalBatchInfo):
        return batch[:-1], batch[-1]
    return batch, None


def unshard_steps(per_rank: Sequence[Sequence[Any]]) -> List[Any]:
    """Undo the DDP sharding of per-batch results gathered from every process.

    ``per_rank[r][s]`` is process ``r``'s result for step ``s``: piece ``r`` of step ``s``
    (a slice of a global batch, or a whole batch of a dataset dealt out batch by batch; possibly
    empty). Pieces are in rank order, so reading step by step, and within a step rank by rank,
    restores the input order.

    Example:
        >>> unshard_steps([["a0", "b0"], ["a1", "b1"]])
        ['a0', 'a1', 'b0', 'b1']
    """
    steps = {len(results) for results in per_rank}
    if len(steps) > 1:
        raise RuntimeError(f"The processes ran different numbers of batches: {[len(r) for r in per_rank]}")
    return [results[s] for s in range(steps.pop() if steps else 0) for results in per_rank]
