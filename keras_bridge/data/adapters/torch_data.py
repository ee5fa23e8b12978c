"""torch ``Dataset`` and ``DataLoader`` inputs.

* A map-style ``Dataset`` is sample-centric (guide 3.7): it is batched by ``batch_size`` (default 32)
  with the array rules, i.e. :class:`~keras_bridge.data.adapters.array.GlobalBatchSampler` (a new sample
  permutation every epoch, ``steps_per_epoch`` carry-over, ``batch_size`` the global batch under DDP).
  A whole batch of samples is fetched and collated per item, so worker processes pass one batch each.
* A ``DataLoader`` is used as given on one process. Under DDP (the engine builds its Trainer with
  ``use_distributed_sampler=False``) a map-style loader that is not already distributed is rebuilt
  with the same dataset, ``collate_fn``, workers and ``shuffle``, batched like a sample-centric
  ``Dataset``: every process takes its slice of each global batch of ``loader.batch_size``.
  A loader over an ``IterableDataset``, or with a custom ``batch_sampler``, is iterated as given and
  sharded batch by batch (:class:`~keras_bridge.data.adapters.iterable.IterableLoader`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence

import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
)

import keras_bridge.data.keras_rng as keras_rng
from keras_bridge.data.adapters.array import DEFAULT_BATCH_SIZE, BatchLoader, GlobalBatchSampler
from keras_bridge.data.adapters.iterable import IterableLoader
from keras_bridge.data.batches import empty_like, prepare_batch, reraise_with_context
from keras_bridge.data.contract import DataOptions
from keras_bridge.data.distributed import rank_world


def is_map_dataset(obj: object) -> bool:
    """A sized, map-style torch ``Dataset`` (not an ``IterableDataset``)."""
    return isinstance(obj, Dataset) and not isinstance(obj, IterableDataset) and hasattr(obj, "__len__")


class SampleBatches(Dataset):
    """A sample-centric dataset indexed a whole batch at a time (by an index tensor), collated and prepared.

    Items are what :class:`GlobalBatchSampler` yields: an index tensor, or under DDP a pair
    ``(index tensor, global batch info)`` whose info rides along at the end of the batch.
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Optional[Callable[[Any], Any]] = None,
        class_weight: Optional[Mapping[Any, float]] = None,
    ) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn or default_collate
        self.class_weight = class_weight

    def __len__(self) -> int:
        return len(self.dataset)

    def _samples(self, indices: list) -> list:
        getitems = getattr(self.dataset, "__getitems__", None)
        if getitems is not None:
            return list(getitems(indices))
        return [self.dataset[i] for i in indices]

    def __getitem__(self, key: Any) -> Any:
        info = None
        if isinstance(key, tuple):
            key, info = key
        indices = key.tolist() if isinstance(key, torch.Tensor) else list(key)
        shown = indices if len(indices) <= 4 else indices[:2] + ["..."] + indices[-1:]
        where = f"the batch of samples {shown} of the {type(self.dataset).__name__}"
        try:
            # An empty DDP shard still collates one sample to learn the structure, then drops its rows.
            batch = self.collate_fn(self._samples(indices or [0]))
        except Exception as exc:
            raise reraise_with_context(exc, f"Reading {where} raised an error") from exc
        batch = prepare_batch(batch, where, self.class_weight)
        if not indices:
            batch = empty_like(batch)
        if info is None:
            return batch
        return (batch if isinstance(batch, tuple) else (batch,)) + (info,)


def _identity(batch: object) -> Any:
    return batch


def sample_loader(dataset: Any, options: DataOptions = DataOptions(), collate_fn: Optional[Callable[[Any], Any]] = None,
                  **loader_kwargs: Any) -> BatchLoader:  # fmt: skip
    """Batch a map-style torch ``Dataset`` with Keras's array rules.

    ``options.seed`` None shuffles as Keras's ``DataLoader`` over arrays does (see :class:`GlobalBatchSampler`).
    The loader's own iterators draw from ``loader_kwargs["generator"]`` when given (a user's
    ``DataLoader`` rebuilt under DDP draws where it did), else from a private generator.

    Example:
        >>> ds = torch.utils.data.TensorDataset(torch.arange(10.0), torch.arange(10))
        >>> [len(b[0]) for b in sample_loader(ds, DataOptions(batch_size=4))]
        [4, 4, 2]
    """
    # Evaluation steps apply per evaluate() call (the trainer limits them), never carried over.
    steps = None if options.evaluation else options.steps
    shuffle = False if options.evaluation else options.shuffle
    batch_size = options.batch_size or DEFAULT_BATCH_SIZE
    # A rebuilt user's DataLoader: its RandomSampler drew its seed from the loader's generator.
    sampler_generator = loader_kwargs.get("generator")
    loader_kwargs.setdefault("generator", keras_rng.private_generator())
    sampler = GlobalBatchSampler(len(dataset), batch_size, shuffle, options.seed, steps, sampler_generator)
    return BatchLoader(
        SampleBatches(dataset, collate_fn, options.class_weight),
        sampler=sampler,
        batch_size=None,
        collate_fn=_identity,
        **loader_kwargs,
    )


def is_distributed(loader: DataLoader) -> bool:
    samplers = [loader.sampler, getattr(loader.batch_sampler, "sampler", None)]
    return any(isinstance(s, DistributedSampler) for s in samplers)


def _reshardable(loader: DataLoader) -> bool:
    """A map-style loader batched by torch's own BatchSampler over a Random/Sequential sampler."""
    return (
        is_map_dataset(loader.dataset)
        and loader.batch_size is not None
        and type(loader.batch_sampler) is BatchSampler
        and not loader.drop_last
        and type(loader.sampler) in (RandomSampler, SequentialSampler)
    )


class WrappedDataLoader(IterableLoader):
    """A user's ``DataLoader``: as given on one process, re-batched per process under DDP.

    Args:
        loader: the ``DataLoader``.
        options: ``steps`` (batches per epoch; the loader's iterator carries over between epochs),
            ``class_weight`` (applied per batch: Keras refuses it for DataLoaders, the bridge does not), ``seed``
            (shuffle seed of the rebuilt loader under DDP; None: Keras's ``RandomSampler`` draw), ``mode`` (an
            evaluation loader resets before every pass).
    """

    def __init__(self, loader: DataLoader, options: DataOptions = DataOptions()) -> None:
        super().__init__(loader, options, name="DataLoader")
        self.loader = loader
        self._sharded: Optional[DataLoader] = None

    def rebuilt(self) -> Optional[DataLoader]:
        _, world = rank_world()
        loader = self.loader
        if world == 1 or is_distributed(loader) or not _reshardable(loader):
            return None
        if self._sharded is None:
            kwargs = dict(num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
                          worker_init_fn=loader.worker_init_fn,
                          multiprocessing_context=loader.multiprocessing_context, generator=loader.generator,
                          persistent_workers=loader.persistent_workers)  # fmt: skip
            if loader.num_workers > 0:
                kwargs["prefetch_factor"] = loader.prefetch_factor
            rebuilt = dataclasses.replace(self.options, batch_size=loader.batch_size, steps=None,
                                          shuffle=isinstance(loader.sampler, RandomSampler))  # fmt: skip
            self._sharded = sample_loader(loader.dataset, rebuilt, loader.collate_fn, **kwargs)
        return self._sharded

    def source(self) -> Iterable[Any]:
        rebuilt = self.rebuilt()
        return self.data if rebuilt is None else rebuilt

    def keras_pass_draws(self, steps: Optional[int] = None, evaluation: bool = False) -> keras_rng.PassDraws:
        """The loader opens its own iterator when a pass starts; Keras opens the next one, eagerly, when a pass
        has been read to its end (a carried-over training pass opens its next when the next epoch starts).
        """
        if steps is not None and not evaluation:
            return keras_rng.NO_DRAWS
        length = self.num_batches()
        at_end = int(length is not None and (steps is None or length <= steps))
        # A persistent-workers iterator is reused: reopening it draws nothing.
        source = self.loader
        reopens = not (source.persistent_workers and source.num_workers > 0)
        return keras_rng.PassDraws(0, at_end * reopens, source.generator)

    def shards_itself(self) -> bool:
        return self.rebuilt() is not None or is_distributed(self.loader)

    def unshard(self, per_rank: Sequence[Sequence[Any]]) -> List[Any]:
        """Results in input order; a ``DistributedSampler``'s own order is kept (with a warning)."""
        if self.rebuilt() is None and is_distributed(self.loader):
            warnings.warn(
                "The DataLoader uses a DistributedSampler: its predictions are returned process by process "
                "in the sampler's order (with any padding it adds), not in input order. Pass the DataLoader "
                "without a DistributedSampler to get Keras's order.",
                UserWarning,
                stacklevel=4,
            )
            return [result for results in per_rank for result in results]
        return super().unshard(per_rank)

    def _prepare(self, batch: object, index: int) -> Any:
        if self.rebuilt() is not None:
            return batch  # SampleBatches prepared it (and appended the global batch info)
        return super()._prepare(batch, index)
