"""What Keras's own data pipeline draws from the global random generators, so the bridge draws it too.

On the torch backend Keras feeds every input through a ``torch.utils.data.DataLoader``:

* every ``iter(dataloader)`` takes one draw from the loader's generator (torch's global one unless the
  loader was given its own): its base seed. Keras's epoch iterator opens one iterator when a pass
  starts and, eagerly, the next one when a pass has been read to its end; building an unbuilt model
  opens one more and reads its first batch (the build peek);
* arrays with ``shuffle=True`` are sampled by a ``RandomSampler``: when a pass reads its first batch it
  draws one seed from torch's global generator and permutes the samples with a generator seeded with
  it (:func:`sampler_seed`, :func:`sampler_permutation`). ``shuffle="batch"`` permutes each batch with
  ``torch.randperm`` on the global generator (:func:`batch_permutation`);
* a ``PyDataset`` with ``shuffle=True`` shuffles its batch indices with Python's global ``random``
  when a pass starts (:func:`python_shuffle`).

The bridge's loaders draw their shuffles at those points by default (:func:`keras_stream`), so that
under ``keras.utils.set_random_seed`` the batches, an unseeded ``Dropout``'s masks (drawn from the same
global generator) and the random states left after ``fit``/``evaluate``/``predict`` are Keras's. The
base-seed draws the bridge's own loaders do not take are taken by :class:`PassDraws` at the callback
points of :class:`~keras_bridge.callbacks.driver.KerasCallbackDriver`.

``set_shuffle_order("seeded")`` opts into the bridge's independent shuffle instead: every pass is
permuted by a private generator seeded from the fit's seed, leaving the global streams alone.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0); _ = iter(torch.utils.data.DataLoader([1, 2])); a = torch.rand(1)
    >>> _ = torch.manual_seed(0); draw(); b = torch.rand(1)
    >>> bool(a == b)
    True
"""

from __future__ import annotations

import random
from typing import Any, Callable, List, Optional

import torch

#: Where shuffles are drawn: ``"keras"`` (Keras's draws from the global generators) or ``"seeded"``.
SHUFFLE_ORDER = "keras"


def set_shuffle_order(order: str) -> None:
    """Choose how ``fit`` shuffles (``kb.data.set_shuffle_order``): ``"keras"`` (default) or ``"seeded"``.

    ``"keras"`` draws every shuffle where and as Keras's torch backend does, from torch's and Python's
    global generators: the same batches as ``keras.Model.fit`` under the same seed. ``"seeded"`` permutes
    with a private generator seeded per ``fit`` and leaves the global generators alone.

    Example:
        >>> set_shuffle_order("seeded"); keras_stream()
        False
        >>> set_shuffle_order("keras"); keras_stream()
        True
    """
    global SHUFFLE_ORDER
    if order not in ("keras", "seeded"):
        raise ValueError(f'Expected `order` to be "keras" or "seeded". Received: order={order!r}')
    SHUFFLE_ORDER = order


def keras_stream() -> bool:
    """True when shuffles are drawn from the global generators, as Keras draws them."""
    return SHUFFLE_ORDER == "keras"


def draw(times: int = 1, generator: Optional[torch.Generator] = None) -> None:
    """Take ``times`` draws from ``generator`` (torch's global one if None), as ``iter(DataLoader)`` does once."""
    for _ in range(times):
        torch.empty((), dtype=torch.int64).random_(generator=generator)


def sampler_seed(generator: Optional[torch.Generator] = None) -> int:
    """The seed a ``RandomSampler`` without a generator of its own draws when a pass starts."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def sampler_permutation(n: int, seed: int) -> torch.Tensor:
    """The sample order of a ``RandomSampler`` pass over ``n`` samples whose drawn seed is ``seed``.

    Example:
        >>> _ = torch.manual_seed(3); keras = list(torch.utils.data.RandomSampler(range(5)))
        >>> _ = torch.manual_seed(3); sampler_permutation(5, sampler_seed()).tolist() == keras
        True
    """
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator)


def batch_permutation(size: int) -> List[int]:
    """The order inside one batch of ``size`` samples under ``shuffle="batch"`` (torch's global generator)."""
    return torch.randperm(size).tolist()


def python_shuffle(n: int) -> List[int]:
    """A PyDataset pass's batch order under ``shuffle=True``: indices shuffled by Python's global ``random``."""
    order = list(range(n))
    random.shuffle(order)
    return order


class PassDraws:
    """The base-seed draws Keras's ``DataLoader`` takes around one pass and the bridge's loader does not.

    Args:
        at_start: draws when the pass starts (after the epoch-begin callbacks).
        at_end: draws when the pass has been read to its end (Keras opens the next iterator).
        generator: the generator drawn from (a user's ``DataLoader`` may have its own); None: torch's global.
        rows: called with every training batch when its step starts, to draw and apply an in-batch
            shuffle Keras draws at that point (see ``GlobalBatchSampler.shuffle_rows``).
        start_if, end_if: draw only when they return True (a pass carried over between epochs by
            ``steps_per_epoch`` opens its iterator once, and the next only when it has been read).

    Example:
        >>> PassDraws(1, 1).start()
    """

    def __init__(self, at_start: int = 0, at_end: int = 0, generator: Optional[torch.Generator] = None,
                 rows: Optional[Callable[[Any], None]] = None, start_if: Optional[Callable[[], bool]] = None,
                 end_if: Optional[Callable[[], bool]] = None) -> None:  # fmt: skip
        self.at_start, self.at_end, self.generator, self.rows = at_start, at_end, generator, rows
        self.start_if, self.end_if = start_if, end_if
        self._ended = False

    def start(self) -> None:
        self._ended = False
        if self.start_if is None or self.start_if():
            draw(self.at_start, self.generator)

    def end(self, epoch_over: bool = False) -> None:
        """The draws at the end of a pass, once per pass.

        Args:
            epoch_over: called when the epoch is over, however it ended. Only a pass carried over between
                epochs (``end_if``) draws then: one that ran out early has been read to its end too (Keras
                draws after its last batch; only draws nobody reads can fall in between).
        """
        if self._ended or (epoch_over and self.end_if is None):
            return
        if self.end_if is None or self.end_if():
            self._ended = True
            draw(self.at_end, self.generator)

    def batch(self, batch: object) -> None:
        if self.rows is not None:
            self.rows(batch)

    def __repr__(self) -> str:
        return f"PassDraws(at_start={self.at_start}, at_end={self.at_end})"


#: No draws: a loader that takes its own (or an input Keras does not feed through a DataLoader).
NO_DRAWS = PassDraws()


def private_generator() -> torch.Generator:
    """A generator for a bridge-made DataLoader, so that iterating it leaves torch's global stream alone."""
    return torch.Generator()
