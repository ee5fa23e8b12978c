"""What a traced forward pass does to autograd that a replayed graph would not: found while it is traced.

A captured forward graph (:mod:`keras_bridge.capture`) holds aten ops; when it is replayed, autograd records
those ops and differentiates them itself. Three things a forward pass can do are therefore lost on replay,
and each would change the gradients silently:

* a custom gradient: a ``torch.autograd.Function`` (what ``keras.ops.custom_gradient`` is on the torch backend),
  whose own ``backward`` eager autograd runs, where the replay would differentiate its forward ops;
* a gradient hook on a tensor of the forward pass (``tensor.register_hook``): it exists only in the traced run;
* a change of gradient recording inside the forward pass (``torch.no_grad()`` or ``torch.enable_grad()`` around
  some of its ops): the graph records the ops, not the mode, so the replay would track what eager Keras does not.
  The in-place updates Keras makes to its own variables under ``torch.no_grad()`` (``Variable.assign``:
  BatchNormalization's moving statistics, a seed generator's state) are the exception: the capture replays them
  detached, as eagerly.

:class:`AutogradWatch` finds them while the forward pass runs on fake tensors, so the capture runs that forward
pass eagerly instead (said once at INFO). Node-level hooks (``tensor.grad_fn.register_hook``) are not seen.

Example:
    >>> import torch
    >>> weight = torch.ones(2, requires_grad=True)
    >>> watch = AutogradWatch(variables=[])
    >>> with watch:
    ...     with torch.no_grad():
    ...         scale = weight.sum()
    >>> watch.reason
    'it turns gradient recording off or on inside the forward pass (torch.no_grad / torch.enable_grad)'
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

from keras_bridge.utils.compat import TorchDispatchMode, op_is_mutable, pytree_flatten

__all__ = ["AutogradWatch"]

_CUSTOM_GRADIENT = "it has a custom gradient ({name}, a torch.autograd.Function) that a replayed graph would not run"
_HOOK = "it registers a gradient hook on a tensor (register_hook) that a replayed graph would not have"
_GRAD_MODE = "it turns gradient recording off or on inside the forward pass (torch.no_grad / torch.enable_grad)"
# Ops whose result is the same, and untracked, whatever the gradient mode.
_MODE_FREE = frozenset({torch.ops.aten.detach.default})


class AutogradWatch(TorchDispatchMode):
    """A dispatch mode, entered around a traced forward pass, noting what its replay would lose (module docstring).

    Args:
        variables: the model's variable tensors: in-place writes into them under ``torch.no_grad()`` are Keras's
            own variable updates, which the capture replays detached.
    """

    def __init__(self, variables: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.reason: Optional[str] = None
        self._variables: Set[int] = {id(v) for v in variables}
        self._ambient = torch.is_grad_enabled()
        self._hook_methods: List[Any] = []

    def __enter__(self) -> AutogradWatch:
        self._ambient = torch.is_grad_enabled()
        for name in ("register_hook", "register_post_accumulate_grad_hook"):
            original = getattr(torch.Tensor, name)
            self._hook_methods.append((name, original))
            setattr(torch.Tensor, name, self._noting_hooks(original))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        while self._hook_methods:
            name, original = self._hook_methods.pop()
            setattr(torch.Tensor, name, original)

    def _noting_hooks(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def register(tensor: torch.Tensor, *args: object, **kwargs: object) -> Any:
            self._note(_HOOK)
            return original(tensor, *args, **kwargs)

        return register

    def _note(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __torch_dispatch__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Tuple[object, ...] = (),
        kwargs: Optional[Dict[str, object]] = None,
    ) -> Any:
        kwargs = kwargs or {}
        if self.reason is None and torch.is_grad_enabled() != self._ambient and func not in _MODE_FREE:
            if not self._writes_a_variable(func, args) and self._tracks(args, kwargs):
                self._note(_GRAD_MODE)
        return func(*args, **kwargs)

    def _writes_a_variable(self, func: Callable[..., Any], args: Tuple[object, ...]) -> bool:
        return op_is_mutable(func) and bool(args) and id(args[0]) in self._variables

    def _tracks(self, args: Tuple[object, ...], kwargs: Dict[str, object]) -> bool:
        """Whether the op would be recorded by autograd in one of the two modes (a tensor input requiring grad)."""
        if not self._ambient:
            return True  # grad switched on inside a no-grad call: conservatively, everything in it counts
        leaves, _ = pytree_flatten((args, kwargs))
        return any(isinstance(t, torch.Tensor) and t.requires_grad for t in leaves)

    def check_outputs(self, outputs: object) -> None:
        """Look through the autograd graph the traced run built for ``outputs`` for custom ``backward`` nodes.

        A custom gradient is the reason given when there is one (its ``forward`` also runs without gradient
        recording, which the dispatch check notes first).
        """
        leaves, _ = pytree_flatten(outputs)
        stack: List[Any] = [t.grad_fn for t in leaves if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        seen: Set[int] = set()
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, torch.autograd.function.BackwardCFunction):
                self.reason = _CUSTOM_GRADIENT.format(name=type(node).__name__.removesuffix("Backward"))
                return
            stack.extend(next_node for next_node, _ in node.next_functions)
