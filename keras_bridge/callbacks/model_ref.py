"""What a Keras callback sees as ``self.model``.

For a Keras model it is the model itself. For a torch module it is :class:`TorchModelFacade`, which
offers what callbacks use: ``stop_training``, ``optimizer.learning_rate``, ``get_weights`` /
``set_weights``.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np
import torch


class _OptimizerFacade:
    """``model.optimizer`` for callbacks: the learning rate of the running torch optimizer."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def _torch_optimizer(self) -> Any:
        trainer = self._module._trainer
        if trainer is None or not trainer.optimizers:
            raise RuntimeError("The optimizer exists only while fit() runs.")
        return trainer.optimizers[0]

    @property
    def learning_rate(self) -> float:
        from keras_bridge.optimizers import get_learning_rate

        return get_learning_rate(self._torch_optimizer())

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        from keras_bridge.optimizers import set_learning_rate

        set_learning_rate(self._torch_optimizer(), float(value))


class TorchModelFacade:
    """A Keras-model-like view of a :class:`~keras_bridge.KerasModule` wrapping a torch module."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.stop_training = False
        self.optimizer = _OptimizerFacade(module)

    @property
    def module(self) -> Any:
        return self._module

    def get_weights(self) -> List[np.ndarray]:
        return [t.detach().cpu().numpy().copy() for t in self._module.model.state_dict().values()]

    def set_weights(self, weights: List[np.ndarray]) -> None:
        state = self._module.model.state_dict()
        if len(weights) != len(state):
            raise ValueError(
                f"`set_weights` expected {len(state)} arrays (the module's state_dict entries), "
                f"received {len(weights)}."
            )
        with torch.no_grad():
            for tensor, value in zip(state.values(), weights):
                tensor.copy_(torch.as_tensor(value, device=tensor.device, dtype=tensor.dtype))


def callback_model(module: Any) -> Any:
    """The object to hand to ``callback.set_model``."""
    if module.is_keras:
        return module.model
    facade = getattr(module, "_callback_model", None)
    if facade is None:
        facade = TorchModelFacade(module)
        object.__setattr__(module, "_callback_model", facade)
    return facade
