"""Any iterable of batches as ``fit`` input: a generator, a list of batches, a ``DataLoader`` used as given."""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from keras_bridge.data.batches import empty_like, prepare_batch
from keras_bridge.data.contract import DataOptions
from keras_bridge.data.distributed import max_across_ranks, rank_world
from keras_bridge.data.epoch_iterator import KerasLoader, StepsCarryOver


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

    def __init__(self, data: Iterable[Any], options: DataOptions = DataOptions(), name: Optional[str] = None) -> None:
        super().__init__(options.steps, options.evaluation)
        self.data = data
        self.options = options
        self.name = name or type(data).__name__
        self._carry: StepsCarryOver[Tuple[int, Any]] = StepsCarryOver(options.steps)
        self._position = 0
        self._replay: List[Any] = []  # batches peek() took from a one-shot iterator
        self._last: Any = None
        self._said_dealt = False

    # ------------------------------------------------------------------ what to iterate
    def source(self) -> Iterable[Any]:
        """The iterable to read this epoch (subclasses may swap in a sharded one)."""
        return self.data

    def shards_itself(self) -> bool:
        """True when :meth:`source` already yields only this process's batches."""
        return False

    def _prepare(self, batch: object, index: int) -> Any:
        return prepare_batch(batch, f"batch {index} of the {self.name}", self.options.class_weight)

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
        # A one-shot iterator: keep what we took, replay it first. Only an iterator is asked for iter():
        # opening a DataLoader's iterator takes a draw of its generator, which Keras's peek takes once.
        if isinstance(data, Iterator) and iter(data) is data:
            if not self._replay:
                self._replay.append(next(data))
            raw = self._replay[0]
        else:
            raw = next(iter(data))
        return self._prepare(raw, 0)

    def _restart(self) -> None:
        self._carry.restart()

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
        self._say_batches_are_dealt(rank, world)
        while True:
            group = list(itertools.islice(it, world))
            # Every process must run the same number of steps, or the gradient all-reduce hangs.
            if max_across_ranks(len(group)) == 0:
                return
            index = self._position * world + rank
            self._position += 1
            yield index, (group[rank] if rank < len(group) else None)

    def _say_batches_are_dealt(self, rank: int, world: int) -> None:
        """Before the first step: under DDP ``batch_size`` is not the global batch for these batches."""
        if rank != 0 or self._said_dealt or self.evaluation:
            return
        self._said_dealt = True
        warnings.warn(
            f"Under DDP with {world} processes, the batches of this {self.name} are dealt out whole, one per "
            f"process: every optimizer step trains on {world} of its batches (a global batch {world} times the "
            f"batch you built, each process's batch being one of them), so the numbers differ from 1 process. "
            "For a global batch that the processes split, pass arrays or a torch Dataset with `batch_size`, a "
            "keras.utils.PyDataset, or a DataLoader over a map-style Dataset with the default sampler and "
            f"drop_last=False; or build batches {world} times smaller.",
            UserWarning,
            stacklevel=2,
        )

    def _emit(self, index: int, raw: object) -> Any:
        if raw is None:
            template = self._last if self._last is not None else self.peek()
            return empty_like(template)
        batch = self._prepare(raw, index)
        self._last = batch
        return batch

    def _epoch_batches(self) -> Iterator[Any]:
        for index, raw in self._carry.epoch(lambda: (self._mine(self._fresh()), self.num_batches())):
            yield self._emit(index, raw)
