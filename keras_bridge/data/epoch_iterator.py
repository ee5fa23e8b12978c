"""``KerasLoader``: what Lightning iterates for a dataset input, with Keras's epoch rules.

One ``iter(loader)`` is one Keras epoch. The loader owns what Keras's ``EpochIterator`` owns:

* ``steps_per_epoch``: the data iterator carries over between epochs and a pass that runs out ends the
  epoch early (:class:`StepsCarryOver`, the one home of that rule for every input kind);
* the dataset's epoch hooks: ``on_epoch_end()`` once before the first epoch (``reset``) and after every
  epoch, ``on_epoch_begin()`` before every epoch; evaluation loaders reset before every pass;
* a non-destructive ``peek()`` of the first batch (to build the model).

It is a plain iterable, not a ``DataLoader``: Lightning then never re-instantiates it nor injects a
``DistributedSampler`` (with ``use_distributed_sampler`` True or False), and the loader shards itself
under DDP, looking the process group up at iteration time (it does not exist yet when ``fit`` builds
the loaders).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

from torch.utils.data import DataLoader, IterableDataset

import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.data.distributed import unshard_steps

T = TypeVar("T")
_END: Any = object()


def warn_ran_out(done: int, steps: int) -> None:
    warnings.warn(
        f"Your input ran out of data after {done} of steps_per_epoch={steps} batches; interrupting the "
        "epoch. The next epoch starts a new pass over the data. Make sure your dataset can generate at "
        "least `steps_per_epoch * epochs` batches.",
        UserWarning,
        stacklevel=3,
    )


class StepsCarryOver(Generic[T]):
    """Keras's ``steps_per_epoch`` rule, for any source of passes over the data.

    Without ``steps`` every epoch is one whole new pass. With ``steps``, an epoch takes ``steps`` items
    from an iterator kept from one epoch to the next; a pass that runs out ends the epoch early with
    Keras's warning, and the next epoch starts a new pass. A pass of known length read to its very
    end is replaced at the next epoch without a warning.

    Args:
        steps: items per epoch, or None.

    Example:
        >>> carry = StepsCarryOver(2)
        >>> new_pass = lambda: (iter("abcd"), 4)
        >>> [list(carry.epoch(new_pass)) for _ in range(3)]
        [['a', 'b'], ['c', 'd'], ['a', 'b']]
    """

    def __init__(self, steps: Optional[int]) -> None:
        self.steps = steps
        self._iterator: Optional[Iterator[T]] = None
        self._left: Optional[int] = None
        self._taken = 0  # items taken from the current pass
        self._yielded = 0  # items yielded in the current epoch
        self._resume: Optional[Dict[str, Any]] = None
        self.passes_started = 0

    def pass_read(self) -> bool:
        """True when the next epoch starts a new pass: none is live, or the live one was read to its end.

        Example:
            >>> carry = StepsCarryOver(2)
            >>> _ = list(carry.epoch(lambda: (iter("abc"), 3))); carry.pass_read()
            False
            >>> _ = list(carry.epoch(lambda: (iter("abc"), 3))); carry.pass_read()
            True
        """
        return self._iterator is None or self._left == 0

    def restart(self) -> None:
        """Forget the carried-over pass: the next epoch starts a new one."""
        self._iterator = None
        self._resume = None

    def state_dict(self) -> Dict[str, Any]:
        """Where the iteration stands: items taken from the live pass (None: no live pass) and in this epoch.

        Example:
            >>> carry = StepsCarryOver(2)
            >>> _ = list(carry.epoch(lambda: (iter("abcde"), 5)))
            >>> carry.state_dict()
            {'pass_position': 2, 'epoch_position': 2}
        """
        live = self.steps is None or self._iterator is not None
        return {"pass_position": self._taken if live else None, "epoch_position": self._yielded}

    def load_state_dict(self, state: Mapping[str, Any], epoch_finished: bool) -> None:
        """Continue from a :meth:`state_dict` at the next :meth:`epoch`: the rest of the saved epoch, or
        (``epoch_finished``) the epoch after it. ``new_pass`` must then re-create the saved live pass.

        Example:
            >>> carry = StepsCarryOver(2)
            >>> carry.load_state_dict({"pass_position": 3, "epoch_position": 1}, epoch_finished=False)
            >>> list(carry.epoch(lambda: (iter("abcde"), 5)))
            ['d']
        """
        self._resume = {**state, "epoch_finished": bool(epoch_finished)}

    def epoch(self, new_pass: Callable[[], Tuple[Iterator[T], Optional[int]]]) -> Iterator[T]:
        """The items of one epoch; ``new_pass()`` gives ``(iterator, length or None)`` of a fresh pass."""
        resume, self._resume = self._resume, None
        skip = 0 if resume is None or resume["epoch_finished"] else int(resume["epoch_position"])
        self._yielded = skip
        if self.steps is None:
            self._taken = 0
            for item in new_pass()[0]:
                self._taken += 1
                if self._taken > skip:
                    self._yielded += 1
                    yield item
            return
        if resume is not None:
            self._iterator = None
            if resume["pass_position"] is not None:
                self._start(new_pass)
                for _ in range(int(resume["pass_position"])):
                    self._next()
        if self._iterator is None or self._left == 0:
            self._start(new_pass)
        for done in range(skip, self.steps):
            item = self._next()
            if item is _END:
                self._iterator = None
                warn_ran_out(done, self.steps)
                return
            self._yielded += 1
            yield item

    def _start(self, new_pass: Callable[[], Tuple[Iterator[T], Optional[int]]]) -> None:
        self._iterator, self._left = new_pass()
        self._taken = 0
        self.passes_started += 1

    def _next(self) -> Any:
        assert self._iterator is not None
        item = next(self._iterator, _END)
        if item is not _END:
            self._taken += 1
            if self._left is not None:
                self._left -= 1
        return item


class KerasLoader:
    """Base class: one ``__iter__`` is one Keras epoch, with the dataset's epoch hooks around it.

    Subclasses implement :meth:`_epoch_batches` (this process's batches of one epoch, honouring
    ``steps_per_epoch``), :meth:`num_batches` and :meth:`peek`, and may override the hooks.

    Args:
        steps_per_epoch: batches per epoch (per process); the iterator carries over between epochs.
        evaluation: reset (``on_epoch_end``) before every pass, as Keras's ``evaluate`` does; a
            training loader resets only before its first pass (call :meth:`reset` to do it again).
    """

    #: Dataset loaders are read as Keras reads them, not through a torch DataLoader of Keras's.
    mirrors_keras_rng = False
    #: Datasets come batched: there is no batch size of the bridge's to report.
    global_batch_size: Optional[int] = None

    def __init__(self, steps_per_epoch: Optional[int] = None, evaluation: bool = False) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.evaluation = evaluation
        self._reset_pending = True
        # Batches yielded in the current epoch, and where the next epoch starts (a resumed epoch: later).
        self._yielded_batches = 0
        self._resume_position = 0
        self._resuming = False

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

    def unshard(self, per_rank: Sequence[Sequence[Any]]) -> List[Any]:
        """Per-batch results of every process in input order: the processes took turns, batch by batch."""
        return unshard_steps(per_rank)

    def as_keras_loader(self, evaluation: bool = False) -> KerasLoader:
        return self

    def keras_pass_draws(self, steps: Optional[int] = None, evaluation: bool = False) -> keras_rng.PassDraws:
        """No draws: Keras reads this kind without a torch ``DataLoader`` (a kind that has one overrides)."""
        return keras_rng.NO_DRAWS

    def take_peek_draws(self) -> None:
        """Nothing: Keras's build peek into this kind draws nothing the peek itself does not."""

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
            if not self._resuming:  # a restored position keeps its pass
                self._restart()
            self.on_epoch_end()
        self._resuming = False
        self.on_epoch_begin()
        self._yielded_batches, self._resume_position = self._resume_position, 0
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
            self._yielded_batches += 1
            yield current
            current = following


class KerasEpochs(IterableDataset):
    """A :class:`KerasLoader` seen as a torch ``IterableDataset``: one pass is one Keras epoch of batches.

    ``DataLoader(KerasEpochs(loader), batch_size=None)`` is a real ``torch.utils.data.DataLoader`` that
    yields the loader's batches as they are (it runs in this process; the loader runs its own workers).
    Lightning never re-samples a loader over an ``IterableDataset``, so the loader's own DDP sharding
    holds with ``use_distributed_sampler`` True or False.
    """

    def __init__(self, loader: KerasLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def as_dataloader(loader: KerasLoader) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` over ``loader``'s Keras epochs (see :class:`KerasEpochs`)."""
    return DataLoader(KerasEpochs(loader), batch_size=None)


def unwrap(data: object) -> Any:
    """The :class:`KerasLoader` behind a DataLoader made by :func:`as_dataloader`, else ``data``."""
    if isinstance(data, DataLoader) and isinstance(data.dataset, KerasEpochs):
        return data.dataset.loader
    return data
