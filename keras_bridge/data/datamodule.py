"""``KerasDataModule``: ``fit``'s data arguments as a ``LightningDataModule``."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Union

import lightning.pytorch as pl
import torch

from keras_bridge.data.contract import DataOptions
from keras_bridge.data.dispatch import make_loader, split_validation, validation_loader
from keras_bridge.typing import ArrayTree, DataInput


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
        x: DataInput,
        y: ArrayTree = None,
        batch_size: Optional[int] = 32,
        validation_split: float = 0.0,
        validation_data: DataInput = None,
        shuffle: Union[bool, str] = True,
        class_weight: Optional[Mapping[int, float]] = None,
        sample_weight: ArrayTree = None,
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
        self._built_batch_size: Optional[int] = None

    def _build(self) -> None:
        # Built again when the batch size changed (Lightning's batch size finder sets `batch_size`).
        if self._train is not None and self._built_batch_size == self.batch_size:
            return
        self._built_batch_size = self.batch_size
        train, validation = split_validation(
            self.x, self.y, self.sample_weight, self.validation_split, self.validation_data
        )
        options = DataOptions(batch_size=self.batch_size, shuffle=self.shuffle, class_weight=self.class_weight,
                              seed=self.seed)  # fmt: skip
        self._train = make_loader(*train, options=options).as_keras_loader()
        if validation is not None:
            from_split = self.validation_data is None
            val_options = DataOptions(batch_size=self.batch_size, mode="evaluate")
            self._val = validation_loader(validation, val_options, from_split).as_keras_loader(evaluation=True)

    def train_dataloader(self) -> Any:
        self._build()
        self._train.reset()  # Keras calls on_epoch_end() when each fit starts
        return self._train

    def val_dataloader(self) -> Union[Any, List[Any]]:
        self._build()
        return [] if self._val is None else self._val
