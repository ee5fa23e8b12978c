"""Where Keras's own data pipeline draws from torch's global random generator, so the bridge draws there too.

On the torch backend Keras feeds arrays through a ``torch.utils.data.DataLoader``, and every
``iter(dataloader)`` takes one draw from torch's global generator (the loader's base seed). Keras's
epoch iterator creates one iterator when a pass starts and, eagerly, the next one when a pass ends;
building an unbuilt model peeks one more. An unseeded ``Dropout`` draws its masks from the same
global generator, so the masks of a model trained on the bridge equal Keras's only if the bridge's
draws fall at the same points. The bridge's array loaders use a private generator and the points
below take the draws instead (see :class:`~keras_bridge.callbacks.driver.KerasCallbackDriver`):

* a fit or evaluate that builds the model: one draw before training starts;
* every training pass: one draw after the epoch-begin callbacks, one after the last batch;
* every validation, evaluation and prediction pass: two draws when it starts.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0); _ = iter(torch.utils.data.DataLoader([1, 2])); a = torch.rand(1)
    >>> _ = torch.manual_seed(0); draw(); b = torch.rand(1)
    >>> bool(a == b)
    True
"""

from __future__ import annotations

import torch


def draw(times: int = 1) -> None:
    """Take ``times`` draws from torch's global generator, as ``iter(DataLoader)`` does once."""
    for _ in range(times):
        torch.empty((), dtype=torch.int64).random_()


def private_generator() -> torch.Generator:
    """A generator for a bridge-made DataLoader, so that iterating it leaves torch's global stream alone."""
    return torch.Generator()
