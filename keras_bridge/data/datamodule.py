"""``KerasDataModule``: ``fit``'s data arguments as a ``LightningDataModule``."""

from __future__ import annotations

from typing import Any, List, Optional, Union

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from keras_bridge.data.adapters.torch_data import SampleLoader
from keras_bridge.data.dispatch import fit_loaders
from keras_bridge.data.epoch_iterator import KerasLoader


def _as_keras_loader(loader: Any, evaluation: bool) -> Any:
    # Lightning leaves plain iterables alone: no DistributedSampler is injected into a loader that
    # shards itself, whatever `use_distributed_sampler` says.
    if isinstance(loader, DataLoader):
        return SampleLoader(loader, evaluation)
    return loader


class KerasDataModule(pl.LightningDataModule):
    """The data of a Keras ``fit`` call, for ``trainer.fit(module, datamodule=dm)``.

    Arguments mean what they mean in ``keras.Model.fit``: ``x`` may be arrays (with ``y`` and
    ``sample_weight``), a PyDataset, a torch Dataset/DataLoader or an iterable of batches;
    ``validation_split`` takes the last samples of arrays before shuffling; ``class_weight`` applies to
    training batches only. Works with a plain ``lightning.Trainer`` (``use_distributed_sampler`` True
    or False), on one process or under DDP, where ``batch_size`` is the global batch for arrays.

    Args:
        x: input data.
        y: targets (arrays only).
        batch_size: the (global) batch size for sample-centric data; ignored for batched datasets.
        validation_split: fraction of array data held out for validation.
        validation_data: ``(x_val, y_val[, sw_val])`` or a dataset.
        shuffle: ``True``, ``False`` or ``"batch"`` (see ``fit``).
        class_weight: ``{class: weight}`` for training batches.
        sample_weight: per-sample weights (arrays only).

    Example:
        >>> import numpy as np
        >>> dm = KerasDataModule(np.zeros((10, 3)), np.zeros(10), batch_size=4, validation_split=0.2)
        >>> len(dm.train_dataloader()), len(dm.val_dataloader())
        (2, 1)
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        batch_size: Optional[int] = 32,
        validation_split: float = 0.0,
        validation_data: Any = None,
        shuffle: Any = True,
        class_weight: Any = None,
        sample_weight: Any = None,
    ) -> None:
        super().__init__()
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.batch_size = batch_size
        self.validation_split = validation_split
        self.validation_data = validation_data
        self.shuffle = shuffle
        self.class_weight = class_weight
        # Drawn from torch's global RNG: seed_everything / keras.utils.set_random_seed make it reproducible.
        self.seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self._train: Any = None
        self._val: Any = None

    def _build(self) -> None:
        if self._train is not None:
            return
        train, val = fit_loaders(
            self.x,
            self.y,
            self.sample_weight,
            self.batch_size,
            self.shuffle,
            self.class_weight,
            self.validation_split,
            self.validation_data,
            None,
            self.seed,
        )
        self._train = _as_keras_loader(train, evaluation=False)
        self._val = None if val is None else _as_keras_loader(val, evaluation=True)

    def train_dataloader(self) -> Any:
        self._build()
        if isinstance(self._train, KerasLoader):
            self._train.reset()  # Keras calls on_epoch_end() when each fit starts
        return self._train

    def val_dataloader(self) -> Union[Any, List[Any]]:
        self._build()
        return [] if self._val is None else self._val
