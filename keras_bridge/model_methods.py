"""The Keras ``Model`` methods a user reaches for, on :class:`~keras_bridge.KerasModule`.

``save``, ``save_weights``, ``load_weights``, ``get_weights``, ``set_weights`` and ``summary`` take
Keras's arguments and write Keras's formats, for a wrapped Keras model and for a torch module alike
(see :mod:`keras_bridge.saving.formats` for what each extension holds).

Example:
    >>> import torch, keras_bridge as kb
    >>> module = kb.KerasModule(torch.nn.Linear(3, 2))
    >>> [w.shape for w in module.get_weights()]
    [(2, 3), (2,)]
    >>> module.summary()
    Model: "Linear"
    Total params: 8 (32.00 B)
    Trainable params: 8 (32.00 B)
    Non-trainable params: 0 (0.00 B)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, List, Optional, cast

import numpy as np
import torch

import keras_bridge.saving.formats as saving
from keras_bridge.typing import PathLike

if TYPE_CHECKING:
    from keras_bridge.protocols import CallbackHost


def _size(n_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.2f} {unit}"
        n_bytes /= 1024  # type: ignore[assignment]
    return ""


class KerasModelMethods:
    """Mixin of :class:`~keras_bridge.KerasModule`: Keras's model methods over ``self.model``."""

    model: torch.nn.Module
    is_keras: bool

    @property
    def _host(self) -> CallbackHost:
        return cast("CallbackHost", self)  # the mixin's classes are callback hosts (KerasModule, LoggedMetricsHost)

    def save(self, filepath: PathLike, overwrite: bool = True, **kwargs: object) -> None:
        """Save the model, its compile arguments and optimizer state, as Keras's ``model.save``.

        Args:
            filepath: ``*.keras`` (for a Keras model also read by ``keras.models.load_model``), ``*.ckpt``
                (a Lightning checkpoint of the running Trainer) or ``*.h5`` (Keras models).
            overwrite: replace an existing file. Defaults to ``True``.
            **kwargs: Keras's other arguments (``zipped``), accepted and ignored.
        """
        saving.save_model(self._host, filepath, overwrite=overwrite)

    def save_weights(self, filepath: PathLike, overwrite: bool = True, **kwargs: object) -> None:
        """Save the weights to ``*.weights.h5`` (Keras's layout for a Keras model), ``*.weights.pt`` or ``*.ckpt``."""
        saving.save_weights(self._host, filepath, overwrite=overwrite)

    def load_weights(self, filepath: PathLike, skip_mismatch: bool = False, **kwargs: object) -> None:
        """Load weights written by :meth:`save_weights` (or by Keras's ``save_weights`` for a Keras model)."""
        if skip_mismatch and self.is_keras:
            type(self.model).load_weights(self.model, filepath, skip_mismatch=True)  # type: ignore[attr-defined]
            return
        saving.load_weights(self._host, filepath)

    def get_weights(self) -> List[np.ndarray]:
        """The weights as NumPy arrays: Keras's order for a Keras model, ``state_dict`` order otherwise."""
        if self.is_keras:
            return list(self.model.get_weights())  # type: ignore[operator]
        return [t.detach().cpu().numpy().copy() for t in self.model.state_dict().values()]

    def set_weights(self, weights: List[Any]) -> None:
        """Set the weights from arrays in :meth:`get_weights`'s order.

        Raises:
            ValueError: a different number of arrays, or an array of another shape.
        """
        if self.is_keras:
            self.model.set_weights(weights)  # type: ignore[operator]
            return
        state = self.model.state_dict()
        if len(weights) != len(state):
            raise ValueError(
                f"Expected `weights` to hold {len(state)} arrays (the module's state_dict entries). "
                f"Received: {len(weights)} arrays."
            )
        for (name, tensor), value in zip(state.items(), weights):
            if tuple(np.shape(value)) != tuple(tensor.shape):
                raise ValueError(
                    f"Expected the weight {name!r} to have shape {tuple(tensor.shape)}. Received: shape "
                    f"{tuple(np.shape(value))}."
                )
        with torch.no_grad():
            for tensor, value in zip(state.values(), weights):
                tensor.copy_(torch.as_tensor(value, device=tensor.device, dtype=tensor.dtype))

    def summary(self, line_length: Optional[int] = None, positions: Any = None,
                print_fn: Optional[Callable[..., Any]] = None, expand_nested: bool = False,
                show_trainable: bool = False, layer_range: Any = None) -> None:  # fmt: skip
        """Print a summary: Keras's own for a Keras model; layers and parameter counts for a torch module."""
        if self.is_keras:
            self.model.summary(  # type: ignore[operator]
                line_length=line_length, positions=positions, print_fn=print_fn, expand_nested=expand_nested,
                show_trainable=show_trainable, layer_range=layer_range,
            )  # fmt: skip
            return
        write = print_fn or print
        model = self.model
        write(f'Model: "{type(model).__name__}"')
        children = list(model.named_children())
        if children:
            width = line_length or 80
            write("-" * width)
            write(f"{'Layer (type)':<{width - 30}}{'Param #':>30}")
            write("=" * width)
            for name, child in children:
                count = sum(p.numel() for p in child.parameters())
                write(f"{f'{name} ({type(child).__name__})':<{width - 30}}{count:>30,}")
            write("=" * width)
        params = list(model.parameters())
        trainable = [p for p in params if p.requires_grad]
        total_bytes = sum(p.numel() * p.element_size() for p in params)
        trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
        write(f"Total params: {sum(p.numel() for p in params):,} ({_size(total_bytes)})")
        write(f"Trainable params: {sum(p.numel() for p in trainable):,} ({_size(trainable_bytes)})")
        non_trainable = sum(p.numel() for p in params if not p.requires_grad)
        write(f"Non-trainable params: {non_trainable:,} ({_size(total_bytes - trainable_bytes)})")
