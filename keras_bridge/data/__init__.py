"""Keras-style data inputs as Lightning loaders.

``to_dataloader`` turns a PyDataset, a torch Dataset/DataLoader, an iterable of batches or arrays into
something a plain ``lightning.Trainer`` iterates with Keras's rules; ``KerasDataModule`` does the
same for ``fit``'s whole data argument set (validation split/data, shuffle, class and sample weights).
"""

from keras_bridge.data.adapters.pydataset import set_pydataset_ddp
from keras_bridge.data.datamodule import KerasDataModule
from keras_bridge.data.epoch_iterator import KerasLoader
from keras_bridge.data.keras_rng import set_shuffle_order
from keras_bridge.data.lightning import to_dataloader

__all__ = ["KerasDataModule", "KerasLoader", "set_pydataset_ddp", "set_shuffle_order", "to_dataloader"]
