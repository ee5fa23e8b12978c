"""``KerasLoader``: what Lightning iterates for a dataset input, with Keras's epoch rules.

One ``iter(loader)`` is one Keras epoch. The loader owns what Keras's ``EpochIterator`` owns:

* ``steps_per_epoch``: the data iterator carries over between epochs and a pass that runs out ends the
  epoch early (keras-semantics 2.5, surprise 13);
* the dataset's epoch hooks: ``on_epoch_end()`` once before the first epoch (``reset``) and after every
  epoch, ``on_epoch_begin()`` before every epoch; evaluation loaders reset before every pass;
* a non-destructive ``peek()`` of the first batch (to build the model).

It is a plain iterable, not a ``DataLoader``: Lightning then never re-instantiates it nor injects a
``DistributedSampler`` (with ``use_distributed_sampler`` True or False), and the loader shards itself
under DDP, looking the process group up at iteration time (it does not exist yet when ``fit`` builds
the loaders).
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from keras_bridge.data.arrays import _distributed, unshard_global_batches
from keras_bridge.data.batches import empty_like, prepare_batch

_END = object()


def rank_world() -> Tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    return _distributed()


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


def unshard_whole_batches(per_rank: Sequence[Sequence[Any]]) -> List[Any]:
    """Undo the whole-batch DDP sharding of per-batch results gathered from every process.

    :meth:`IterableLoader._mine` and :func:`~keras_bridge.data.pydataset.shard_keys` give step ``s`` of
    process ``r`` batch ``s * world + r`` of the epoch's order; a process without a batch in the last
    step gets an empty (zero-row) one. Reading step by step, rank by rank, restores the input order
    (the same rule as :func:`~keras_bridge.data.arrays.unshard_global_batches`, where each step is one
    global batch split across the processes).

    Example:
        >>> unshard_whole_batches([["b0", "b2"], ["b1", "empty"]])
        ['b0', 'b1', 'b2', 'empty']
    """
    return unshard_global_batches(per_rank)


def warn_ran_out(done: int, steps: int) -> None:
    warnings.warn(
        f"Your input ran out of data after {done} of steps_per_epoch={steps} batches; interrupting the "
        "epoch. The next epoch starts a new pass over the data. Make sure your dataset can generate at "
        "least `steps_per_epoch * epochs` batches.",
        UserWarning,
        stacklevel=3,
    )


class KerasLoader:
    """Base class: one ``__iter__`` is one Keras epoch, with the dataset's epoch hooks around it.

    Subclasses implement :meth:`_epoch_batches` (this process's batches of one epoch, honouring
    ``steps_per_epoch``), :meth:`num_batches` and :meth:`peek`, and may override the hooks.

    Args:
        steps_per_epoch: batches per epoch (per process); the iterator carries over between epochs.
        evaluation: reset (``on_epoch_end``) before every pass, as Keras's ``evaluate`` does; a
            training loader resets only before its first pass (call :meth:`reset` to do it again).
    """

    def __init__(self, steps_per_epoch: Optional[int] = None, evaluation: bool = False) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.evaluation = evaluation
        self._reset_pending = True

    # ------------------------------------------------------------------ to override
    def num_batches(self) -> Optional[int]:
        """Batches in one full pass for this process, or None when unknown or infinite."""
        return None

    def peek(self) -> Any:
        """The first batch, without disturbing the epochs to come."""
        raise NotImplementedError

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass

    def _epoch_batches(self) -> Iterator[Any]:
        raise NotImplementedError

    def _restart(self) -> None:
        """Forget carried-over progress: the next epoch starts a new pass (Keras's ``reset``)."""

    # ------------------------------------------------------------------ the Keras epoch
    def reset(self) -> None:
        """Run ``on_epoch_end()`` before the next epoch, as Keras's ``EpochIterator.reset`` at ``fit`` start."""
        self._reset_pending = True

    def __len__(self) -> int:
        n = self.num_batches()
        if self.steps_per_epoch is not None:
            n = self.steps_per_epoch if n is None else min(n, self.steps_per_epoch)
        if n is None:
            # len() of an unknown-length input raises TypeError, like len() of a generator.
            raise TypeError(f"{type(self).__name__} has no known number of batches")
        return n

    def __iter__(self) -> Iterator[Any]:
        # The hooks run in this (main) process before the epoch's worker processes are started, so
        # freshly started workers see what on_epoch_end() changed (lightning-map 7.3).
        if self._reset_pending or self.evaluation:
            self._reset_pending = False
            self._restart()
            self.on_epoch_end()
        self.on_epoch_begin()
        batches = self._epoch_batches()
        current = next(batches, _END)
        if current is _END:
            self.on_epoch_end()
        while current is not _END:
            following = next(batches, _END)
            if following is _END:
                # Every batch of the epoch has been read. Lightning stops asking after the last batch
                # of a sized loader, so the hook runs now rather than at StopIteration; a loop that
                # breaks earlier skips it, as Keras's does.
                self.on_epoch_end()
            yield current
            current = following


class IterableLoader(KerasLoader):
    """Any iterable of batches (a ``DataLoader`` used as given, a generator, a list of batches).

    Batches are standardized and converted on the main process; ``class_weight`` is applied per
    batch. With ``steps_per_epoch`` the iterator stays open between epochs. Under DDP each process
    takes every ``world``-th batch, and the processes agree on the number of steps (one small
    all-reduce per step): a process that has no batch left gets an empty one.

    Example:
        >>> import numpy as np
        >>> loader = IterableLoader([(np.ones((2, 3)), np.zeros(2))] * 3)
        >>> len(loader), [b[0].shape[0] for b in loader]
        (3, [2, 2, 2])
    """

    def __init__(
        self,
        data: Iterable[Any],
        steps_per_epoch: Optional[int] = None,
        class_weight: Any = None,
        evaluation: bool = False,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(steps_per_epoch, evaluation)
        self.data = data
        self.class_weight = class_weight
        self.name = name or type(data).__name__
        self._iterator: Optional[Iterator[Any]] = None
        self._position = 0
        self._replay: List[Any] = []  # batches peek() took from a one-shot iterator
        self._last: Any = None

    # ------------------------------------------------------------------ what to iterate
    def source(self) -> Iterable[Any]:
        """The iterable to read this epoch (subclasses may swap in a sharded one)."""
        return self.data

    def shards_itself(self) -> bool:
        """True when :meth:`source` already yields only this process's batches."""
        return False

    def _prepare(self, batch: Any, index: int) -> Any:
        return prepare_batch(batch, f"batch {index} of the {self.name}", self.class_weight)

    def num_batches(self) -> Optional[int]:
        try:
            n = len(self.source())  # type: ignore[arg-type]
        except (TypeError, NotImplementedError):
            return None
        _, world = rank_world()
        if world > 1 and not self.shards_itself():
            n = -(-n // world)
        return n

    def peek(self) -> Any:
        data = self.source()
        if iter(data) is data:  # a one-shot iterator: keep what we took, replay it first
            if not self._replay:
                self._replay.append(next(data))  # type: ignore[call-overload]
            raw = self._replay[0]
        else:
            raw = next(iter(data))
        return self._prepare(raw, 0)

    def _restart(self) -> None:
        self._iterator = None

    def _fresh(self) -> Iterator[Any]:
        data = self.source()
        it: Iterator[Any] = iter(data)
        if self._replay:
            it, self._replay = itertools.chain(self._replay, it), []
        self._position = 0
        return it

    # ------------------------------------------------------------------ sharding
    def _mine(self, it: Iterator[Any]) -> Iterator[Tuple[int, Any]]:
        """``(index, batch or None)`` for this process; None is an empty slot in the last step."""
        rank, world = rank_world()
        if world == 1 or self.shards_itself():
            for batch in it:
                self._position += 1  # before yielding: the epoch's end check reads it
                yield self._position - 1, batch
            return
        while True:
            group = list(itertools.islice(it, world))
            # Every process must run the same number of steps, or the gradient all-reduce hangs.
            if max_across_ranks(len(group)) == 0:
                return
            index = self._position * world + rank
            self._position += 1
            yield index, (group[rank] if rank < len(group) else None)

    def _emit(self, index: int, raw: Any) -> Any:
        if raw is None:
            template = self._last if self._last is not None else self.peek()
            return empty_like(template)
        batch = self._prepare(raw, index)
        self._last = batch
        return batch

    def _epoch_batches(self) -> Iterator[Any]:
        steps = self.steps_per_epoch
        if steps is None:
            for index, raw in self._mine(self._fresh()):
                yield self._emit(index, raw)
            return
        if self._iterator is None:
            self._iterator = self._mine(self._fresh())
        for done in range(steps):
            item = next(self._iterator, None)
            if item is None:
                self._iterator = None
                warn_ran_out(done, steps)
                return
            yield self._emit(*item)
        n = self.num_batches()
        if n is not None and self._position >= n:
            self._iterator = None  # the pass is complete: the next epoch starts a new one
