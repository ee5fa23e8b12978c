"""The parts of the run that ``run.yaml`` names by ``class_path``: a torch model and the data.

Both are plain classes with typed constructor arguments, so ``LightningCLI`` (jsonargparse) can build them
from the YAML and print them back with ``--print_config``.
"""

from typing import Dict, Optional, Union

import keras_bridge as kb  # first: it selects keras's torch backend

# isort: split
import numpy as np
import torch
from sklearn.datasets import load_digits


class DigitsMLP(torch.nn.Module):
    """The Keras guide's MLP for scikit-learn's 8x8 digits, in torch; it returns logits.

    Args:
        hidden: units of each of the two hidden layers.
        num_classes: number of classes.
    """

    def __init__(self, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.hidden = hidden
        self.num_classes = num_classes
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(64, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_arrays(samples: Optional[int] = None) -> "tuple[np.ndarray, np.ndarray]":
    """scikit-learn's bundled digits (no download): ``x`` scaled to [0, 1] as float32, ``y`` as int64."""
    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int64")
    return (x, y) if samples is None else (x[:samples], y[:samples])


class DigitsData(kb.data.KerasDataModule):
    """The digits as ``fit``'s data: :class:`keras_bridge.data.KerasDataModule` with its Keras arguments.

    Args:
        batch_size: ``fit``'s ``batch_size``.
        validation_split: ``fit``'s ``validation_split`` (the last samples, taken before shuffling).
        shuffle: ``fit``'s ``shuffle`` (``true``, ``false`` or ``"batch"``).
        class_weight: ``fit``'s ``class_weight`` (``{class: weight}``).
        samples: use the first ``samples`` samples only (all 1797 by default).
    """

    def __init__(
        self,
        batch_size: int = 32,
        validation_split: float = 0.0,
        shuffle: Union[bool, str] = True,
        class_weight: Optional[Dict[int, float]] = None,
        samples: Optional[int] = None,
    ) -> None:
        x, y = load_arrays(samples)
        super().__init__(
            x, y, batch_size=batch_size, validation_split=validation_split, shuffle=shuffle, class_weight=class_weight
        )
