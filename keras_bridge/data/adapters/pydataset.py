"""``keras.utils.PyDataset`` on Lightning: batch order, workers, epoch hooks, as Keras runs it.

Mapping (keras-semantics 3, lightning-map 7.3):

* ``workers`` / ``use_multiprocessing``: Keras uses a worker pool iff ``workers > 1`` or
  ``workers > 0 and use_multiprocessing``. Processes become a torch ``DataLoader`` with
  ``num_workers=workers`` over a map-style view whose items are whole batches; threads (no
  multiprocessing) become an ordered thread-pool prefetcher. Otherwise batches are fetched inline.
* ``max_queue_size`` bounds the batches fetched ahead of the consumer: ``max_queue_size - 1`` fetches in
  flight (``prefetch_factor * num_workers`` for processes) plus the one batch the loader holds ahead.
  Worker processes send NumPy batches through their pipe; this process turns them into tensors.
* Batches always arrive in index order of the epoch's key list.
* ``shuffle=True`` permutes the batch order every pass as Keras does, with Python's global ``random``
  when the pass starts (rank 0's order on every process), or with a private seeded generator
  (``kb.data.set_shuffle_order("seeded")``); an infinite PyDataset (``num_batches is None``) keeps
  counting indices across epochs.
* ``on_epoch_end()`` runs in this process before the epoch's workers start: worker processes are
  started per epoch (non-persistent), so they see its effect.
* Under DDP, :data:`DDP_BATCHES` decides (``kb.data.set_pydataset_ddp("split" | "deal")``):

  - ``"split"`` (the default): every process reads every batch of the epoch's order and keeps its own
    contiguous slice of the rows (``tensor_split(world)[rank]``), as arrays do; the loss is scaled so
    that DDP's gradient average is the gradient of the whole batch. One optimizer step sees the same
    samples as on 1 process, so the History and weights equal the 1-process run (rtol 1e-4), and the
    progress bar counts the same steps. The cost: ``__getitem__`` runs for every batch on every
    process (``world`` times the data loading work, none of the compute saved on it).
  - ``"deal"``: the batches are dealt out whole: step ``s`` of process ``r`` is batch ``s * world + r``
    of the epoch's order. When the count is not a multiple of ``world``, the processes without a batch
    in the last step get an empty batch (zero rows): no batch is duplicated, so metrics stay exact,
    and every process runs the same number of steps (``ceil(len / world)``, which the bar shows). One
    optimizer step then consumes ``world`` batches, so the trajectory depends on the process count
    (like a larger batch); each batch is loaded once.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterable, Iterator, List, Mapping, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.data.batches import empty_like, prepare_batch, reraise_with_context, to_torch
from keras_bridge.data.contract import DataOptions
from keras_bridge.data.distributed import GlobalBatchInfo, from_rank0, rank_world, shared_seed
from keras_bridge.data.epoch_iterator import KerasLoader, StepsCarryOver
from keras_bridge.utils.tree import first_batch_dim, map_structure

if TYPE_CHECKING:
    import keras

Key = Tuple[int, bool]  # (batch index, give an empty batch instead)

#: How a PyDataset is sharded under DDP: ``"split"`` (each batch split across the processes: the
#: 1-process trajectory) or ``"deal"`` (whole batches dealt out: each batch loaded once). See the module doc.
DDP_BATCHES = "split"


def set_pydataset_ddp(mode: str) -> None:
    """Choose how PyDatasets are sharded under DDP (``kb.data.set_pydataset_ddp``): ``"split"`` or ``"deal"``.

    Call it in the script before ``fit``, so every process (also the ones a launcher starts) sets it.
    """
    global DDP_BATCHES
    if mode not in ("split", "deal"):
        raise ValueError(f"Expected mode to be 'split' or 'deal'. Received: mode={mode!r}")
    DDP_BATCHES = mode


def _dealt_world() -> Tuple[int, int]:
    """``(rank, world)`` the batch indices are dealt over: one process when each batch is split."""
    rank, world = rank_world()
    return (0, 1) if DDP_BATCHES == "split" else (rank, world)


def split_rows(batch: Any, rank: int, world: int) -> Any:
    """Process ``rank``'s contiguous slice of every array of a batch, with the global batch size appended.

    Example:
        >>> x, y, sw, info = split_rows((torch.arange(5), torch.arange(5), None), rank=1, world=2)
        >>> x.tolist(), sw, info.global_size
        ([3, 4], None, 5)
    """
    size = first_batch_dim(batch[0])

    def take(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.ndim > 0:
            return v.tensor_split(world)[rank]
        return v

    return tuple(map_structure(take, part) for part in batch) + (GlobalBatchInfo(size, world),)


#: Start method for PyDataset worker processes: None is torch's default ("fork" on Linux). "spawn"
#: needs a picklable PyDataset defined in an importable module, and restarts Python in every worker
#: each epoch (seconds), because workers are not persistent.
MULTIPROCESSING_CONTEXT: Optional[str] = None


def is_py_dataset(obj: object) -> bool:
    """True for a ``keras.utils.PyDataset`` (without importing keras if it is not loaded)."""
    from keras_bridge.utils.keras import is_keras_object

    return is_keras_object(obj, "utils.PyDataset")


def fetch_batch(
    py_dataset: keras.utils.PyDataset,
    index: int,
    class_weight: Optional[Mapping[Any, float]] = None,
    empty: bool = False,
    convert: bool = True,
) -> Any:
    """``py_dataset[index]`` made ready for the module; errors name the index and keep the traceback."""
    where = f"{type(py_dataset).__name__}.__getitem__({index})"
    try:
        raw = py_dataset[index]
    except Exception as exc:
        raise reraise_with_context(exc, f"{where} raised an error") from exc
    batch = prepare_batch(raw, where, class_weight, convert)
    return empty_like(batch) if empty else batch


class PyDatasetBatches(Dataset):
    """A map-style view of a PyDataset whose items are whole, prepared batches (for worker processes)."""

    def __init__(self, py_dataset: keras.utils.PyDataset, class_weight: Optional[Mapping[Any, float]] = None) -> None:
        self.py_dataset = py_dataset
        self.class_weight = class_weight

    def __getitem__(self, key: Key) -> Any:
        # NumPy crosses the worker pipe ~3x faster than torch tensors through shared memory.
        return fetch_batch(self.py_dataset, key[0], self.class_weight, key[1], convert=False)


class _Keys:
    """A sampler over an epoch's precomputed keys (sized when the epoch is finite)."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = keys

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)  # type: ignore[arg-type]


def _identity(batch: object) -> Any:
    return batch


def ordered_prefetch(fn: Callable[[Any], Any], keys: Iterable[Any], workers: int, max_in_flight: int) -> Iterator[Any]:
    """``fn(key)`` for each key, computed by ``workers`` threads, yielded in key order.

    At most ``max_in_flight`` calls are pending at any time, which bounds the memory held by
    finished-but-unconsumed results. Closing the generator (or an exception) cancels what is pending.

    Example:
        >>> list(ordered_prefetch(lambda k: k * k, range(5), workers=2, max_in_flight=3))
        [0, 1, 4, 9, 16]
    """
    keys = iter(keys)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keras_bridge_pydataset")
    pending: deque = deque(pool.submit(fn, k) for k in itertools.islice(keys, max(1, max_in_flight)))
    try:
        while pending:
            result = pending.popleft().result()
            for key in itertools.islice(keys, 1):
                pending.append(pool.submit(fn, key))
            yield result
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


class BatchOrder:
    """The order in which a PyDataset's batches are read, pass after pass, with Keras's carry-over.

    Args:
        shuffle: permute the indices of every new pass of a finite dataset.
        seed: None: Keras's shuffle (Python's global ``random`` when the pass starts, rank 0's order
            under DDP); an int: pass ``p`` is permuted with a torch generator seeded ``seed + p``.
        steps: ``steps_per_epoch`` (steps of ``world`` batches under DDP), or None.
    """

    def __init__(self, shuffle: bool, seed: Optional[int], steps: Optional[int] = None) -> None:
        self.shuffle = bool(shuffle)
        self.seed = seed
        self._seed_shared = False
        self._pass_draw: Optional[List[int]] = None  # the live pass's Keras order (saved, reused on resume)
        self._resume_draws: List[List[int]] = []
        self._passes = 0
        self._carry: StepsCarryOver[List[int]] = StepsCarryOver(steps)
        self._length: Optional[int] = None
        self._next_index = 0  # infinite datasets count on across epochs
        self.epoch_start: Dict[str, Any] = self.state_dict()  # the state before the current epoch was drawn

    def state_dict(self) -> Dict[str, Any]:
        """The seed, passes drawn, carried-over position and (infinite datasets) the next index."""
        return {"seed": self.seed, "passes": self._passes, "length": self._length, "next_index": self._next_index,
                "carry": self._carry.state_dict(), "pass_draw": self._pass_draw}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any], later_draw: Optional[List[int]] = None) -> None:
        """Continue from :meth:`state_dict`: the next :meth:`epoch` draws what followed it.

        Keras's orders already drawn are reused rather than drawn again: the saved live pass's, then
        ``later_draw`` (the order of a pass drawn after ``state`` was taken).
        """
        self.seed, self._seed_shared = None if state["seed"] is None else int(state["seed"]), True
        self._length, self._next_index = state["length"], int(state["next_index"])
        live = self._carry.steps is not None and state["carry"]["pass_position"] is not None
        self._passes = int(state["passes"]) - 1 if live else int(state["passes"])
        self._resume_draws = [d for d in (state.get("pass_draw") if live else None, later_draw) if d is not None]
        self._carry.load_state_dict(state["carry"], epoch_finished=True)

    def _new_pass(self, n: int, world: int) -> Tuple[Iterator[List[int]], int]:
        self._passes += 1
        if not self.shuffle:
            order = list(range(n))
        elif self.seed is None:
            if self._resume_draws:
                order = self._resume_draws.pop(0)
            else:  # every process shuffles (its global random moves as on one process); all use rank 0's
                order = from_rank0(keras_rng.python_shuffle(n))
            self._pass_draw = order
        else:
            if not self._seed_shared:
                self.seed, self._seed_shared = shared_seed(self.seed), True
            g = torch.Generator()
            g.manual_seed(self.seed + self._passes - 1)
            order = torch.randperm(n, generator=g).tolist()
        # One step takes `world` batches, one per process.
        steps = [order[i : i + world] for i in range(0, n, world)]
        return iter(steps), len(steps)

    @property
    def carry(self) -> StepsCarryOver[List[int]]:
        """The passes drawn and read so far (``steps_per_epoch`` carries a pass over epochs)."""
        return self._carry

    def restart(self) -> None:
        """Drop the current pass of a finite dataset (an infinite one keeps counting, as in Keras)."""
        self._carry.restart()

    def take_peek_draws(self, n: Optional[int]) -> None:
        """What Keras's build peek draws besides its iterator's base seed: the shuffle of the pass it opens."""
        if self.shuffle and self.seed is None and n is not None:
            keras_rng.python_shuffle(n)

    def epoch(self, n: Optional[int], world: int) -> Iterable[int]:
        """Global batch indices of the next epoch (all processes), or an endless iterator."""
        self.epoch_start = self.state_dict()
        steps = self._carry.steps
        if n is None:
            if steps is None:
                return itertools.count(self._next_index)  # runs until something stops it
            start, self._next_index = self._next_index, self._next_index + steps * world
            return range(start, self._next_index)
        if n != self._length:
            self._length = n
            self._carry.restart()
        return [i for step in self._carry.epoch(lambda: self._new_pass(n, world)) for i in step]


def shard_keys(indices: Iterable[int], rank: int, world: int) -> Iterable[Key]:
    """This process's keys: every ``world``-th batch, plus empty slots so that all processes get as many.

    Example:
        >>> shard_keys([4, 1, 0, 3, 2], rank=1, world=2)
        [(1, False), (3, False), (4, True)]
    """
    if world == 1:
        if isinstance(indices, (list, range)):
            return [(i, False) for i in indices]
        return ((i, False) for i in indices)
    if not isinstance(indices, (list, range)):
        return ((i, False) for i in itertools.islice(indices, rank, None, world))
    indices = list(indices)
    steps = math.ceil(len(indices) / world)
    keys = []
    for s in range(steps):
        j = s * world + rank
        # An empty slot still fetches a real batch (to learn its structure) and drops its rows.
        keys.append((indices[j], False) if j < len(indices) else (indices[j % len(indices)], True))
    return keys


def start_method() -> str:
    """How PyDataset worker processes start: :data:`MULTIPROCESSING_CONTEXT`, else Python's current default."""
    import multiprocessing

    chosen = MULTIPROCESSING_CONTEXT or multiprocessing.get_start_method(allow_none=True)
    return chosen or multiprocessing.get_all_start_methods()[0]


def _check_picklable(py_dataset: keras.utils.PyDataset) -> None:
    """Worker processes that do not fork receive the PyDataset pickled: refuse one that cannot be, up front."""
    import pickle

    method = start_method()
    if method == "fork":
        return
    try:
        pickle.dumps(py_dataset)
    except Exception as err:
        raise ValueError(
            f"`x` is a {type(py_dataset).__name__} with use_multiprocessing=True and workers={py_dataset.workers}: "
            f"its worker processes start with {method!r}, which sends them the dataset pickled, and it cannot be "
            f"pickled ({type(err).__name__}: {err}). Define it at the top level of an importable module and keep "
            "no open files, locks or lambdas on it, or use use_multiprocessing=False (threads)."
        ) from err


class PyDatasetLoader(KerasLoader):
    """Iterate a ``keras.utils.PyDataset`` the way Keras's ``fit`` does, on Lightning.

    Args:
        py_dataset: the PyDataset (its ``workers``, ``use_multiprocessing`` and ``max_queue_size`` apply).
        options: ``shuffle`` (the batch order of every pass), ``class_weight`` (per-sample weights, batch by
            batch), ``steps`` (batches per epoch; the order carries over between epochs), ``seed`` (of the
            batch-order shuffles; None: Keras's, see :class:`BatchOrder`), ``mode`` (evaluation runs
            ``on_epoch_end()`` before every pass).

    Example:
        >>> import keras, numpy as np
        >>> class Squares(keras.utils.PyDataset):
        ...     def __len__(self): return 3
        ...     def __getitem__(self, i): return np.full((2, 1), i), np.full((2,), i * i)
        >>> [int(y[0]) for _, y in PyDatasetLoader(Squares())]
        [0, 1, 4]
    """

    def __init__(self, py_dataset: keras.utils.PyDataset, options: DataOptions = DataOptions()) -> None:
        super().__init__(options.steps, options.evaluation)
        self.py_dataset = py_dataset
        self.options = options
        self.order = BatchOrder(bool(options.shuffle) and not options.evaluation, options.seed, options.steps)
        self._skip = 0
        self.workers = int(py_dataset.workers or 0)
        self.use_multiprocessing = bool(py_dataset.use_multiprocessing)
        self.max_queue_size = max(1, int(py_dataset.max_queue_size or 1))
        if self.mode == "processes":
            _check_picklable(py_dataset)

    @property
    def mode(self) -> str:
        """``"processes"``, ``"threads"`` or ``"inline"`` (Keras's rule for using a worker pool)."""
        if self.use_multiprocessing and self.workers > 0:
            return "processes"
        if self.workers > 1:
            return "threads"
        return "inline"

    def num_batches(self) -> Optional[int]:
        n = self.py_dataset.num_batches
        if n is None:
            return None
        _, world = _dealt_world()
        return math.ceil(n / world)

    def on_epoch_begin(self) -> None:
        self.py_dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self.py_dataset.on_epoch_end()

    def _restart(self) -> None:
        self.order.restart()

    def state_dict(self) -> Dict[str, Any]:
        """Where the batches stand (Lightning's protocol for resumable loaders): the batch order before and
        after the current epoch was drawn, and the batches of it already yielded.
        """
        order = self.order
        return {"order": order.epoch_start, "after": order.state_dict(), "epoch_position": self._yielded_batches}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Make the next epoch continue from :meth:`state_dict`: the rest of the saved epoch (its remaining
        batches in the same order, the others not fetched), or the epoch after it when the saved one was
        read to its end (or ``state["epoch_finished"]``).
        """
        position = int(state["epoch_position"])
        try:
            finished = bool(state.get("epoch_finished")) or position >= len(self)
        except TypeError:  # an infinite dataset: only the flag tells
            finished = bool(state.get("epoch_finished"))
        if finished:
            self.order.load_state_dict(state["after"])
        else:  # the epoch is drawn again from the state before it, reusing a Keras order it drew
            before, after = state["order"], state["after"]
            drawn = after.get("pass_draw") if int(after["passes"]) > int(before["passes"]) else None
            self.order.load_state_dict(before, later_draw=drawn)
        self._skip = 0 if finished else position
        self._resume_position = self._skip
        self._resuming = True

    def peek(self) -> Any:
        # What Keras does to build an unbuilt model: on_epoch_begin(), then batch 0.
        self.py_dataset.on_epoch_begin()
        return fetch_batch(self.py_dataset, 0, self.options.class_weight)

    def keras_pass_draws(self, steps: Optional[int] = None, evaluation: bool = False) -> keras_rng.PassDraws:
        """Keras feeds a PyDataset through a torch ``DataLoader``: one base-seed draw when a pass starts and
        one when it has been read to its end (this loader's own passes draw nothing from torch's generator).
        """
        length = self.num_batches()
        if steps is not None and not evaluation:
            # A pass carried over between epochs: the first iterator opens when the fit's first epoch
            # starts, the next at the end of an epoch that read its pass to the end.
            carry = self.order.carry
            first = lambda: carry.passes_started == 0  # noqa: E731
            return keras_rng.PassDraws(1, int(length is not None), start_if=first, end_if=carry.pass_read)
        return keras_rng.PassDraws(1, int(length is not None and (steps is None or length <= steps)))

    def take_peek_draws(self) -> None:
        keras_rng.draw()  # the peek's DataLoader iterator
        self.order.take_peek_draws(self.py_dataset.num_batches)

    def _window(self) -> int:
        # KerasLoader holds one finished batch ahead (to run on_epoch_end on time): together with the
        # fetches in flight, at most max_queue_size batches exist beyond what was consumed.
        return max(1, self.max_queue_size - 1)

    def _epoch_batches(self) -> Iterator[Any]:
        batches = self._dealt_batches()
        rank, world = rank_world()
        if world == 1 or DDP_BATCHES != "split":
            yield from batches
            return
        try:
            for batch in batches:
                yield split_rows(batch, rank, world)
        finally:
            batches.close()

    def _dealt_batches(self) -> Generator[Any, None, None]:
        rank, world = _dealt_world()
        indices = self.order.epoch(self.py_dataset.num_batches, world)
        keys = shard_keys(indices, rank, world)
        skip, self._skip = self._skip, 0
        if skip:  # a resumed epoch: its first batches were trained on before
            keys = keys[skip:] if isinstance(keys, list) else itertools.islice(keys, skip, None)
        mode = self.mode
        if mode == "inline":
            for index, empty in keys:
                yield fetch_batch(self.py_dataset, index, self.options.class_weight, empty)
        elif mode == "threads":
            fetch = lambda key: fetch_batch(self.py_dataset, key[0], self.options.class_weight, key[1])  # noqa: E731
            yield from ordered_prefetch(fetch, keys, self.workers, self._window())
        else:
            yield from self._process_loader(keys)

    def _process_loader(self, keys: Iterable[Key]) -> Iterator[Any]:
        # A fresh DataLoader (hence fresh worker processes) per epoch: the workers copy the dataset
        # after this epoch's hooks ran. prefetch_factor * workers <= max_queue_size - 1 fetches in flight;
        # each worker holds at least one, so fewer workers run when max_queue_size <= workers.
        workers = min(self.workers, self._window())
        loader = DataLoader(
            PyDatasetBatches(self.py_dataset, self.options.class_weight),
            sampler=_Keys(keys),
            batch_size=None,
            collate_fn=_identity,
            num_workers=workers,
            prefetch_factor=max(1, self._window() // workers),
            persistent_workers=False,
            multiprocessing_context=MULTIPROCESSING_CONTEXT,
        )
        iterator = iter(loader)
        try:
            for batch in iterator:
                yield to_torch(batch)
        finally:
            # Stop the workers now rather than at garbage collection (an early break, an error).
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
