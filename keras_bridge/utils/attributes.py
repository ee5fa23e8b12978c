"""Cheap writes of plain attributes on torch modules that the training loop writes at every step.

Lightning names the running hook on the LightningModule (``module._current_fx_name = "on_train_batch_end"``)
around each of its ~25 hook calls per step, and torchmetrics sets ``_computed`` / ``_update_count`` on
a metric at each update. Each write goes through ``torch.nn.Module.__setattr__``, which checks the
value against ``Parameter``, ``Module`` and ``Buffer`` (two of those checks are Python-level
``isinstance`` hooks): about 60 such writes per step of a small model cost more than its optimizer
update. :class:`PlainAttributeWrites` writes a number, a string, a bool, ``None`` or a plain list, tuple or
dict straight to an attribute that already lives in the instance's ``__dict__``.

Why this is the same as ``nn.Module.__setattr__``: torch keeps a name in exactly one of the instance
``__dict__``, the parameters, the buffers and the submodules (registering one removes the name from
the others, and ``register_buffer`` refuses a name already set). A name found in ``__dict__`` is
therefore none of the three, and for a value that is not a tensor or a module (a container is neither) torch's own
``__setattr__`` ends in ``object.__setattr__``, which is what runs here. Everything else (a new
name, a tensor, a module) takes torch's path.

Example:
    >>> import torch
    >>> class Net(PlainAttributeWrites, torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stage = None
    ...         self.linear = torch.nn.Linear(2, 1)
    >>> net = Net()
    >>> net.stage = "fit"  # a plain write
    >>> net.linear = torch.nn.Linear(2, 3)  # torch's path: still a registered submodule
    >>> net.stage, [name for name, _ in net.named_children()]
    ('fit', ['linear'])
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

__all__ = ["PlainAttributeWrites", "store_signatures"]

# Containers too: torch keeps no list, tuple or dict in its registries, so it writes them with object.__setattr__.
_PLAIN = frozenset({str, int, float, bool, type(None), tuple, list, dict})


class PlainAttributeWrites:
    """Mixin for ``torch.nn.Module`` subclasses: plain values written to existing plain attributes skip torch's checks.

    Put it before ``torch.nn.Module`` (or the LightningModule / torchmetrics class) in the bases.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if type(value) in _PLAIN and name in self.__dict__:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def store_signatures(*functions: Callable[..., Any]) -> None:
    """Store each function's signature on it (``__signature__``): ``inspect`` then returns it without parsing.

    Lightning reads the step methods' signatures at every batch (``inspect.getfullargspec``: does the step
    take ``batch_idx``?).

    Example:
        >>> def step(batch, batch_idx): ...
        >>> store_signatures(step)
        >>> str(step.__signature__)
        '(batch, batch_idx)'
    """
    for function in functions:
        function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
