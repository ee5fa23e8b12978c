"""Torch optimizers with Keras 3's update maths and defaults, and the ``optimizer=`` argument of compile.

Each class is a ``torch.optim.Optimizer`` whose updates equal Keras's (same formulas, same float32
rounding of the scalars, Keras's step count ``iterations`` starting at 0 and bias corrections at
``iterations + 1``). The constructor arguments are Keras's, including ``weight_decay``, ``clipnorm``,
``clipvalue``, ``global_clipnorm``, ``use_ema``, ``ema_momentum``, ``ema_overwrite_frequency`` and
``gradient_accumulation_steps``.

Two ways to call a class:

* with parameters first, as any torch optimizer: ``Adam(model.parameters(), learning_rate=1e-3)``;
* Keras style, without parameters (the first positional argument is then the learning rate):
  ``Adam(1e-3)`` returns an :class:`OptimizerSpec` for ``compile``, built when the parameters exist.

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = SGD([w], learning_rate=0.1)
    >>> w.grad = torch.ones(2); opt.step()
    >>> [round(v, 6) for v in w.tolist()], opt.iterations
    ([0.9, 0.9], 1)
    >>> spec = Adam(1e-3)
    >>> spec.name
    'Adam'
"""

from keras_bridge.optimizers import schedules
from keras_bridge.optimizers.adadelta import Adadelta
from keras_bridge.optimizers.adagrad import Adagrad
from keras_bridge.optimizers.adam import Adam, AdamW
from keras_bridge.optimizers.adamax import Adamax
from keras_bridge.optimizers.base import KerasOptimizer, OptimizerSpec, get_learning_rate, set_learning_rate
from keras_bridge.optimizers.nadam import Nadam
from keras_bridge.optimizers.resolve import from_torch, get_optimizer
from keras_bridge.optimizers.rmsprop import RMSprop
from keras_bridge.optimizers.sgd import SGD

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "KerasOptimizer",
    "Nadam",
    "OptimizerSpec",
    "RMSprop",
    "from_torch",
    "get_learning_rate",
    "get_optimizer",
    "schedules",
    "set_learning_rate",
]
