"""The data contract: the options every input kind takes, and the interface of every loader.

:func:`keras_bridge.data.dispatch.make_loader` turns ``(x, y, sample_weight)`` and one :class:`DataOptions` into a
:class:`Loader`, whatever the input kind; the trainer, ``to_dataloader`` and ``KerasDataModule`` use only what the
protocol declares, never a loader's type.

Example:
    >>> DataOptions(batch_size=8, shuffle=False).evaluation
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, List, Mapping, Optional, Protocol, Sequence

if TYPE_CHECKING:
    from keras_bridge.data.epoch_iterator import KerasLoader
    from keras_bridge.data.keras_rng import PassDraws

MODES = ("fit", "evaluate", "predict")


@dataclass(frozen=True)
class DataOptions:
    """How ``fit`` / ``evaluate`` / ``predict`` want their data served (Keras's arguments of the same names).

    Args:
        batch_size: samples per batch for sliceable data (arrays, map-style datasets); ``None``: Keras's default.
        shuffle: ``True``, ``False`` or ``"batch"`` (training only).
        class_weight: ``{class: weight}``, the one place it is kept; checked once by ``make_loader``.
        steps: ``steps_per_epoch`` (fit) or ``steps`` (evaluate / predict).
        seed: None (default): shuffles drawn as Keras's torch backend draws them, from the global generators;
            an int: the bridge's independent shuffle seeded with it (``kb.data.set_shuffle_order("seeded")``).
        batching_steps: sizes the default batch of arrays (``ceil(n / batching_steps)``) without limiting the
            batches: ``validation_steps``, which Lightning's ``limit_val_batches`` applies.
        mode: ``"fit"``, ``"evaluate"`` or ``"predict"``.
    """

    batch_size: Optional[int] = None
    shuffle: Any = False
    class_weight: Optional[Mapping[Any, float]] = None
    steps: Optional[int] = None
    seed: Optional[int] = None
    batching_steps: Optional[int] = None
    mode: str = "fit"

    @property
    def evaluation(self) -> bool:
        """True for ``evaluate`` / ``predict`` / validation: never shuffled, reset before every pass."""
        return self.mode != "fit"


class Loader(Protocol):
    """What every loader :func:`~keras_bridge.data.dispatch.make_loader` returns offers its callers."""

    @property
    def mirrors_keras_rng(self) -> bool:
        """True when Keras would feed this data through a torch ``DataLoader``, drawing from the global RNG."""

    @property
    def global_batch_size(self) -> Optional[int]:
        """The (global) batch size the bridge batches by, or None when the data comes batched."""

    def __iter__(self) -> Iterator[Any]: ...

    def peek(self) -> Any:
        """The first batch, without disturbing the epochs to come."""

    def reset(self) -> None:
        """Called when ``fit`` starts (Keras runs the dataset's ``on_epoch_end()`` then)."""

    def unshard(self, per_rank: Sequence[Sequence[Any]]) -> List[Any]:
        """Per-batch results of every process (``per_rank[r]``) in input order."""

    def as_keras_loader(self, evaluation: bool = False) -> KerasLoader:
        """This loader as a :class:`~keras_bridge.data.epoch_iterator.KerasLoader` for a plain Trainer."""

    def keras_pass_draws(self, steps: Optional[int] = None, evaluation: bool = False) -> PassDraws:
        """The draws Keras's torch ``DataLoader`` takes around each pass that this loader does not take itself.

        Args:
            steps: ``steps_per_epoch`` of a training loader, ``steps`` of an evaluation one.
            evaluation: an evaluation / prediction / validation loader.
        """

    def take_peek_draws(self) -> None:
        """Take what Keras's build peek draws besides reading the first batch (it opens a fresh iterator)."""
