"""In-memory arrays as Keras batches them: conversion, checks, validation split, class weights.

Arrays are indexed a whole batch at a time (``tensor[index_tensor]``) rather than sample by sample
and collated, which is what keeps the input pipeline near a hand-written torch loop.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np  # noqa: F401  (the doctests use it)
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.data.batches import is_array, to_tensor
from keras_bridge.data.distributed import GlobalBatchInfo, from_rank0, rank_world, shared_seed, unshard_steps
from keras_bridge.data.epoch_iterator import KerasLoader, StepsCarryOver
from keras_bridge.data.lazy_rows import LazyRows, is_lazy_array
from keras_bridge.typing import ArrayTree
from keras_bridge.utils.tree import map_structure

Tensor = torch.Tensor
DEFAULT_BATCH_SIZE = 32


def is_array_structure(obj: object) -> bool:
    """True for an array, or a non-empty list/tuple/dict whose leaves are all arrays."""
    if is_array(obj):
        return True
    if isinstance(obj, Mapping):
        return bool(obj) and all(v is None or is_array_structure(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return bool(obj) and all(v is None or is_array_structure(v) for v in obj)
    return False


def to_tensors(data: ArrayTree) -> Any:
    """Convert an array structure to torch tensors (float64 becomes float32, as in Keras).

    An HDF5 dataset stays on disk: it becomes :class:`~keras_bridge.data.lazy_rows.LazyRows`, read a batch at a time.
    """
    return map_structure(_to_tensor, data)


def _to_tensor(value: object) -> object:
    if value is None or isinstance(value, LazyRows):
        return value
    return LazyRows(value) if is_lazy_array(value) else to_tensor(value)


def _lengths(data: ArrayTree) -> List[int]:
    out: List[int] = []
    map_structure(lambda v: out.append(int(v.shape[0])) if v is not None else None, data)
    return out


def check_cardinality(x: ArrayTree, y: ArrayTree = None, sample_weight: ArrayTree = None) -> int:
    """Return the common number of samples, or raise naming every mismatched length.

    Example:
        >>> check_cardinality(np.zeros((4, 2)), np.zeros(4))
        4
    """
    sizes: Dict[str, List[int]] = {}
    for name, value in (("x", x), ("y", y), ("sample_weight", sample_weight)):
        if value is not None:
            sizes[name] = _lengths(value)
    distinct = {n for lens in sizes.values() for n in lens}
    if len(distinct) > 1:
        detail = ", ".join(f"{k} sizes: {v}" for k, v in sizes.items())
        raise ValueError(
            f"Data cardinality is ambiguous: every array in x, y and sample_weight needs the same "
            f"number of samples (first dimension). Received {detail}."
        )
    if not distinct:
        raise ValueError("`x` is empty: received no arrays.")
    n = distinct.pop()
    if n == 0:
        shapes: List[Tuple[int, ...]] = []
        map_structure(lambda v: shapes.append(tuple(v.shape)) if v is not None else None, x)
        raise ValueError(f"Expected `x` to hold at least one sample. Received: x with 0 samples (shape {shapes}).")
    return n


def slice_structure(data: ArrayTree, start: int, stop: Optional[int]) -> Any:
    return map_structure(lambda v: None if v is None else v[start:stop], data)


def train_validation_split(arrays: Tuple[Any, ...], validation_split: float) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
    """Keras's split: the LAST ``validation_split`` fraction, taken before any shuffling."""
    n = check_cardinality(*arrays)
    split_at = math.floor(n * (1.0 - validation_split))
    if split_at == 0 or split_at == n:
        raise ValueError(
            f"`validation_split={validation_split}` leaves an empty training or validation set "
            f"for {n} samples (split index {split_at}). Use a fraction that keeps at least one "
            "sample on each side."
        )
    train = tuple(slice_structure(a, 0, split_at) for a in arrays)
    val = tuple(slice_structure(a, split_at, None) for a in arrays)
    return train, val


class ArrayBatchDataset(Dataset):
    """A dataset of in-memory tensors whose items are whole batches, indexed by index tensors."""

    def __init__(self, x: ArrayTree, y: ArrayTree = None, sample_weight: ArrayTree = None) -> None:
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.num_samples = check_cardinality(x, y, sample_weight)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: Any) -> Tuple[Any, ...]:
        info = None
        if isinstance(index, tuple):
            index, info = index
        x = _rows_of(self.x, index)
        if self.y is None and self.sample_weight is None:
            batch: Tuple[Any, ...] = (x,)
        else:
            batch = (x, _rows_of(self.y, index), _rows_of(self.sample_weight, index))
        return batch if info is None else batch + (info,)


def _rows(value: Any, index: Any) -> Any:
    """``value[index]``: the rows of one array (a tensor, or lazily read rows) for one batch."""
    if value is None:
        return None
    if type(value) is torch.Tensor and type(index) is torch.Tensor and index.dtype == torch.long and value.dim():
        # The same rows, copied the same way, as `value[index]`; advanced indexing's general path costs
        # about five times as much for a batch of 64 rows of 784 values.
        return torch.index_select(value, 0, index)
    return value[index]


def _rows_of(tree: ArrayTree, index: Any) -> Any:
    """The rows ``index`` of every array of ``tree`` (None stays None)."""
    if tree is None or type(tree) is torch.Tensor:
        return _rows(tree, index)
    return map_structure(lambda v: _rows(v, index), tree)


class GlobalBatchSampler(Sampler):
    """Yields one index tensor per batch, in Keras's order, with ``batch_size`` the *global* batch.

    Under DDP every process walks the same global batches and takes its own contiguous slice of each,
    so the samples seen per optimizer step do not depend on the number of processes.

    Args:
        num_samples: dataset size.
        batch_size: global batch size.
        shuffle: ``True`` (new sample permutation per epoch), ``"batch"`` (shuffle inside each
            batch) or ``False``.
        seed: None (default): every pass draws its shuffle as Keras's ``DataLoader`` does, from torch's
            global generator (:mod:`keras_bridge.data.keras_rng`; rank 0's draw under DDP). An int: the
            bridge's independent shuffle, pass ``p`` permuted by a private generator seeded ``seed + p``.
        steps_per_epoch: if set, each epoch takes this many batches from an iterator that carries
            over between epochs, as Keras does; an exhausted pass ends the epoch early.
        generator: the generator Keras's sampler would draw its seed from (a user's ``DataLoader``
            may have one); None: torch's global generator.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: Union[bool, str] = False,
        seed: Optional[int] = None,
        steps_per_epoch: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.generator = generator
        # What the live pass drew from the global generator (saved with the position, reused on resume).
        self._pass_draw: Any = None
        self._resume_draw: Any = None
        # shuffle="batch" on one process: leave the in-batch draws to shuffle_rows (see there).
        self.defer_in_batch = False
        self._deferring = False
        self.epoch = 0
        self._carry: StepsCarryOver[Tensor] = StepsCarryOver(steps_per_epoch)
        self._passes = 0
        self._seed_shared = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def carry(self) -> StepsCarryOver[Tensor]:
        """The passes drawn and read so far (``steps_per_epoch`` carries a pass over epochs)."""
        return self._carry

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return min(self.steps_per_epoch, self.batches_per_pass)
        return self.batches_per_pass

    def _new_pass(self) -> Tuple[Iterator[Tensor], int]:
        if self.steps_per_epoch is None:
            self._passes = self.epoch  # one pass per epoch: its shuffle follows the epoch number
        self._passes += 1
        if self.seed is None:
            return self._keras_pass()
        g = torch.Generator()
        g.manual_seed(self.seed + self._passes - 1)
        if self.shuffle is True:
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        batches = list(torch.split(order, self.batch_size))
        if self.shuffle == "batch":
            batches = [b[torch.randperm(len(b), generator=g)] for b in batches]
        return iter(batches), len(batches)

    def _keras_pass(self) -> Tuple[Iterator[Tensor], int]:
        """A pass in the order Keras's ``DataLoader`` draws: ``RandomSampler`` / in-batch ``randperm``.

        The draws are taken when the pass starts, once: under DDP every process draws, so its global
        generator moves as on one process, and all use rank 0's draw. With :attr:`defer_in_batch` on one
        process, ``shuffle="batch"`` yields the batches in order and :meth:`shuffle_rows` draws and
        applies each batch's permutation when its step starts.
        """
        drawn, self._resume_draw = self._resume_draw, None
        self._deferring = bool(
            drawn is None and self.shuffle == "batch" and self.defer_in_batch and rank_world()[1] == 1
        )
        if drawn is None and self.shuffle is True:
            drawn = from_rank0(keras_rng.sampler_seed(self.generator))
        elif drawn is None and self.shuffle == "batch" and not self._deferring:
            sizes = [len(b) for b in torch.arange(self.num_samples).split(self.batch_size)]
            drawn = from_rank0([keras_rng.batch_permutation(size) for size in sizes])
        self._pass_draw = drawn
        if self.shuffle is True:
            order = keras_rng.sampler_permutation(self.num_samples, drawn)
        else:
            order = torch.arange(self.num_samples)
        batches = list(torch.split(order, self.batch_size))
        if self.shuffle == "batch" and not self._deferring:
            batches = [b[torch.tensor(perm, dtype=torch.int64)] for b, perm in zip(batches, drawn)]
        return iter(batches), len(batches)

    def shuffle_rows(self, batch: object) -> None:
        """Permute the rows of a training batch in place, drawing the permutation now (``shuffle="batch"``).

        Keras draws each batch's permutation from torch's global generator when it reads the batch, just
        before the batch's step, so between the previous step's draws (an unseeded ``Dropout``) and this
        one's. Lightning reads one batch ahead: the batch comes in order and is permuted here, at its
        step. A no-op unless this pass defers its in-batch draws (see :meth:`_keras_pass`).
        """
        if not self._deferring:
            return
        perm: List[Tensor] = []

        def permute(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                if not perm:
                    perm.append(torch.tensor(keras_rng.batch_permutation(len(t)), dtype=torch.int64))
                t.copy_(t.index_select(0, perm[0].to(t.device)))
            return t

        map_structure(permute, batch)

    def take_peek_draws(self) -> None:
        """The draws of Keras's build peek: it opens a ``DataLoader`` iterator and reads one batch of it."""
        keras_rng.draw()
        if self.seed is not None:
            return  # the independent shuffle draws nothing from the global generator
        if self.shuffle is True:
            keras_rng.sampler_seed(self.generator)
        elif self.shuffle == "batch":
            keras_rng.batch_permutation(min(self.batch_size, self.num_samples))

    def __iter__(self) -> Iterator[Any]:
        rank, world = rank_world()
        if self.seed is not None and not self._seed_shared:
            # Every process must draw the same permutation: rank 0's seed.
            self.seed, self._seed_shared = shared_seed(self.seed), world > 1
        for batch in self._carry.epoch(self._new_pass):
            if world == 1:
                yield batch
            else:
                yield batch.tensor_split(world)[rank], GlobalBatchInfo(len(batch), world)

    def state_dict(self) -> Dict[str, Any]:
        """Where the batches stand: the shuffle seed (or the live pass's Keras draw), the passes drawn and the
        position in pass and epoch.
        """
        return {"epoch": self.epoch, "passes": self._passes, "seed": self.seed, "pass_draw": self._pass_draw,
                **self._carry.state_dict()}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next ``__iter__`` continue from :meth:`state_dict`: the rest of the saved epoch, or the
        epoch after it when the saved one was read to its end (or ``state["epoch_finished"]``).

        Example:
            >>> a = GlobalBatchSampler(10, 3, shuffle=True, seed=4)
            >>> first = iter(a); _ = next(first); state = a.state_dict()
            >>> b = GlobalBatchSampler(10, 3, shuffle=True, seed=99)
            >>> b.load_state_dict(state)
            >>> [t.tolist() for t in b] == [t.tolist() for t in first]
            True
        """
        seed = state["seed"]
        self.seed, self._seed_shared, self.epoch = None if seed is None else int(seed), True, int(state["epoch"])
        finished = bool(state.get("epoch_finished")) or int(state["epoch_position"]) >= len(self)
        live = self.steps_per_epoch is not None and state["pass_position"] is not None
        self._passes = int(state["passes"]) - 1 if live else int(state["passes"])
        # The pass to re-create is the saved live one: its Keras draw is not taken again.
        again = live or (self.steps_per_epoch is None and not finished)
        self._resume_draw = state.get("pass_draw") if again else None
        self._carry.load_state_dict(state, epoch_finished=finished)


class BatchLoader(DataLoader):
    """The ``DataLoader`` over a :class:`GlobalBatchSampler`: it says where its batches stand.

    ``state_dict`` / ``load_state_dict`` are Lightning's protocol for resumable loaders: a Trainer
    restored mid-epoch (``kb.callbacks.ResumableCheckpoint``, or Lightning's own ``ckpt_path``)
    continues at the next batch of the same shuffled order.
    """

    #: Keras feeds arrays (and the bridge map-style datasets) through a torch DataLoader of its own.
    mirrors_keras_rng = True

    @property
    def global_batch_size(self) -> int:
        return cast(GlobalBatchSampler, self.sampler).batch_size

    def peek(self) -> Any:
        sampler = cast(GlobalBatchSampler, self.sampler)
        return self.dataset[torch.arange(min(sampler.batch_size, sampler.num_samples))]

    def reset(self) -> None:
        """Nothing to reset: the sampler starts each epoch itself."""

    def keras_pass_draws(self, steps: Optional[int] = None, evaluation: bool = False) -> keras_rng.PassDraws:
        """Keras's ``DataLoader`` opens an iterator when a pass starts and the next one when a pass has been
        read to its end (one base-seed draw each); this loader's own iterators draw from a private generator.
        """
        sampler = cast(GlobalBatchSampler, self.sampler)
        rows = None if evaluation else sampler.shuffle_rows
        if steps is not None and not evaluation:
            # A pass carried over between epochs: Keras opens the first iterator when the fit's first epoch
            # starts, and the next one at the end of an epoch that read its pass to the end.
            carry = sampler.carry
            first = lambda: carry.passes_started == 0  # noqa: E731
            return keras_rng.PassDraws(1, 1, rows=rows, start_if=first, end_if=carry.pass_read)
        return keras_rng.PassDraws(1, int(steps is None or sampler.batches_per_pass <= steps), rows=rows)

    def take_peek_draws(self) -> None:
        cast(GlobalBatchSampler, self.sampler).take_peek_draws()

    def unshard(self, per_rank: Sequence[Sequence[Any]]) -> List[Any]:
        """Every global batch was split across the processes: step by step, rank by rank."""
        return unshard_steps(per_rank)

    def as_keras_loader(self, evaluation: bool = False) -> KerasLoader:
        return SampleLoader(self, evaluation)

    def state_dict(self) -> Dict[str, Any]:
        return cast(GlobalBatchSampler, self.sampler).state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        cast(GlobalBatchSampler, self.sampler).load_state_dict(state)

    def __getstate__(self) -> Dict[str, Any]:
        # ddp_spawn pickles the loader: a torch.Generator pickles its state as a temporary tensor, whose
        # shared-memory file descriptor is closed before the child starts ("bad value(s) in fds_to_keep").
        state = dict(self.__dict__)
        generator = state.get("generator")
        if isinstance(generator, torch.Generator) and generator.device.type == "cpu":
            state["generator"] = _GeneratorState(bytes(generator.get_state().numpy()))
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        generator = state.get("generator")
        if isinstance(generator, _GeneratorState):
            state["generator"] = generator.rebuild()
        self.__dict__.update(state)


class SampleLoader(KerasLoader):
    """A loader built by :func:`sample_loader` (or the array loader) seen as a :class:`KerasLoader`.

    Used where Lightning might otherwise touch the ``DataLoader`` (``to_dataloader`` and
    ``KerasDataModule`` under a plain ``lightning.Trainer``, whose default ``use_distributed_sampler=True``
    would wrap our self-sharding sampler). It counts its own epochs for the sampler's shuffle, so it
    reshuffles inside and outside a Trainer alike; ``steps_per_epoch`` carry-over lives in the sampler.
    """

    def __init__(self, loader: BatchLoader, evaluation: bool = False) -> None:
        super().__init__(None, evaluation)
        self.loader = loader
        self._epochs = 0

    def num_batches(self) -> Optional[int]:
        return len(self.loader)

    def peek(self) -> Any:
        return self.loader.peek()

    def _epoch_batches(self) -> Any:
        cast(GlobalBatchSampler, self.loader.sampler).set_epoch(self._epochs)
        self._epochs += 1
        return iter(self.loader)

    def state_dict(self) -> Dict[str, Any]:
        """The sampler's position and this loader's epoch count (Lightning's resumable-loader protocol)."""
        return {**cast(GlobalBatchSampler, self.loader.sampler).state_dict(), "epochs": self._epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved epoch (or the next one, when it had ended) in the saved shuffled order."""
        sampler = cast(GlobalBatchSampler, self.loader.sampler)
        sampler.load_state_dict(state)
        finished = bool(state.get("epoch_finished")) or int(state["epoch_position"]) >= len(sampler)
        epochs = int(state.get("epochs", state["epoch"] + 1))
        self._epochs = epochs if finished else epochs - 1


class _GeneratorState:
    """A CPU ``torch.Generator``'s state as plain bytes (pickles without shared memory)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def rebuild(self) -> torch.Generator:
        generator = torch.Generator()
        generator.set_state(torch.tensor(list(self.data), dtype=torch.uint8))
        return generator


def _identity(batch: object) -> Any:
    return batch


def array_loader(
    x: ArrayTree,
    y: ArrayTree = None,
    sample_weight: ArrayTree = None,
    batch_size: int = 32,
    shuffle: Union[bool, str] = False,
    seed: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    pin_memory: bool = False,
) -> BatchLoader:
    """A DataLoader over tensors that yields ``(x,)`` or ``(x, y, sample_weight)`` batches.

    Its own iterators draw from a private generator: the base-seed draws of Keras's ``DataLoader`` are
    taken at Keras's points instead (:class:`~keras_bridge.data.keras_rng.PassDraws`).
    """
    dataset = ArrayBatchDataset(x, y, sample_weight)
    sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle, seed, steps_per_epoch)
    sampler.defer_in_batch = True  # its batches are fresh copies (indexed by index tensors): permutable in place
    return BatchLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity, pin_memory=pin_memory,
                       generator=keras_rng.private_generator())  # fmt: skip


def check_batch_size(batch_size: object) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(
            f"Expected `batch_size` to be a positive integer (or None for the default 32). "
            f"Received: batch_size={batch_size!r}"
        )
