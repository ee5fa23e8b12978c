"""A Keras model's forward pass, captured once per input signature and replayed.

Keras's Python bookkeeping (layer ``__call__``, variable wrappers, name scopes) costs more than the
arithmetic of a small model. The first call with a new input signature (shapes, dtypes, device,
``training``, autocast) traces ``model(x, training=...)`` into an aten graph with
``torch.fx.experimental.proxy_tensor.make_fx`` in fake mode; later calls replay that graph.

What keeps it exact:

* the graph holds the model's own variables (not copies): optimizer updates, ``set_weights`` and
  callbacks see and change the live weights, and gradients reach them;
* in-place variable updates inside ``call`` (BatchNormalization's moving statistics, a counter
  assigned in ``call``) are ops of the graph, replayed at every call;
* an unseeded ``Dropout`` draws from torch's global generator with the same ops as eagerly, so the
  masks follow the same random stream; the model's ``losses`` (regularizers, ``add_loss``) are
  outputs of the graph;
* tracing runs on fake tensors and the variables are restored afterwards: the capture itself has no
  effect the model can observe.

A model whose forward cannot be traced (Python control flow on tensor values, a layer with its own
seed, whose seed Keras reads as a Python number) runs eagerly, and says so once.

Example:
    >>> import keras, torch
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> forward = CapturedForward(model)
    >>> y, losses = forward(torch.ones(4, 3), training=True)
    >>> torch.allclose(y, model(torch.ones(4, 3))), forward.captured
    (True, 1)
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Tuple

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from keras_bridge.utils.compat import pytree_flatten

log = logging.getLogger("keras_bridge")
_EAGER: Any = object()  # a signature that could not be captured


def _signature(x: Any, training: bool) -> Tuple[Any, ...]:
    leaves, spec = pytree_flatten(x)
    described = tuple(
        (tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else (type(v), v) for v in leaves
    )
    autocast = tuple(
        (device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda") if torch.is_autocast_enabled(device)
    )
    return (bool(training), str(spec), described, autocast, torch.is_grad_enabled())


class CapturedForward:
    """``model(x, training)`` replayed from a captured graph per input signature (see the module docstring).

    Args:
        model: a Keras model (torch backend).
        max_graphs: signatures kept; further new signatures run eagerly.
        compile_graphs: also run each captured graph through ``torch.compile``.

    Calling it returns ``(y_pred, losses)``: the outputs and the model's ``losses`` of that call.
    """

    def __init__(self, model: Any, max_graphs: int = 32, compile_graphs: bool = False) -> None:
        self.model = model
        self.max_graphs = max_graphs
        self.compile_graphs = compile_graphs
        self._graphs: Dict[Tuple[Any, ...], Any] = {}
        self._told = False

    @property
    def captured(self) -> int:
        """How many input signatures run from a captured graph."""
        return sum(1 for g in self._graphs.values() if g is not _EAGER)

    def __call__(self, x: Any, training: bool) -> Tuple[Any, List[Any]]:
        key = _signature(x, training)
        graph = self._graphs.get(key)
        if graph is None:
            graph = self._capture(x, training) if len(self._graphs) < self.max_graphs else _EAGER
            self._graphs[key] = graph
        if graph is _EAGER:
            return self.model(x, training=training), list(self.model.losses)
        y_pred, losses = graph(x)
        return y_pred, list(losses)

    def _capture(self, x: Any, training: bool) -> Any:
        model = self.model

        def forward(inputs: Any) -> Tuple[Any, List[Any]]:
            return model(inputs, training=training), list(model.losses)

        # Tracing runs the Python code once on fake tensors; in-place variable updates of that run must
        # not stay (the real step replays them).
        saved = [v.value.detach().clone() for v in model.variables]
        try:
            graph = make_fx(forward, tracing_mode="fake", _allow_non_fake_inputs=True)(x)
            _detach_variable_updates(graph)
            return torch.compile(graph, dynamic=False) if self.compile_graphs else graph
        except Exception as err:
            self._tell(err)
            return _EAGER
        finally:
            with torch.no_grad():
                for variable, value in zip(model.variables, saved):
                    variable.value.copy_(value)

    def _tell(self, err: BaseException) -> None:
        if not self._told:
            self._told = True
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            name = getattr(self.model, "name", type(self.model).__name__)
            log.warning(
                "keras_bridge: %s runs eagerly (its forward pass could not be captured: %s). Pass "
                "compile(jit_compile=False) to silence this.",
                name,
                reason,
            )


def _detach_variable_updates(graph: torch.fx.GraphModule) -> None:
    """Make the graph's in-place updates of model variables leave autograd alone, as eager Keras does.

    Keras assigns variables under ``torch.no_grad()``; the traced graph keeps the in-place op but not
    the no-grad region, so the value written is detached explicitly (otherwise a moving statistic
    would join the autograd graph and stop being a leaf).
    """
    for node in list(graph.graph.nodes):
        packet = getattr(node.target, "overloadpacket", None)  # aten ops; getitem and friends have none
        if node.op != "call_function" or not getattr(packet, "__name__", "").endswith("_"):
            continue
        target = node.args[0] if node.args else None
        if not (isinstance(target, torch.fx.Node) and target.op == "get_attr"):
            continue
        with graph.graph.inserting_before(node):
            node.args = (target,) + tuple(
                graph.graph.call_function(torch.ops.aten.detach.default, (a,)) if isinstance(a, torch.fx.Node) else a
                for a in node.args[1:]
            )
    graph.recompile()
