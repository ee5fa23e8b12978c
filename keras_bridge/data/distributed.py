"""The little the data loaders need from the process group: rank, world size, a shared seed, step counts.

Every function here is a no-op without an initialised process group, and a collective with one: call
it on every process. The loaders look the group up at iteration time, because it does not exist yet
when ``fit`` builds them.
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch


def rank_world() -> Tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def shared_seed(seed: int) -> int:
    """Rank 0's ``seed`` on every process, so that all draw the same shuffles (a collective under DDP)."""
    _, world = rank_world()
    if world == 1:
        return seed
    box = [seed]
    torch.distributed.broadcast_object_list(box, src=0)
    return int(box[0])


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
