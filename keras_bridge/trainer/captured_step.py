"""A Keras model's training step (forward, loss and gradients) captured as one graph per batch signature.

With the fused training step (:mod:`keras_bridge.trainer.fused_step`) and a captured forward pass
(:mod:`keras_bridge.capture`), a step still runs its loss in Python and its backward pass through
autograd's engine, node by node. :class:`CapturedStep` traces, once per batch signature, one program
computing what the eager step computes from a batch ``(x, y, sample_weight)``:

* ``y_pred = model(x, training=True)`` and the model's own ``losses`` of that call;
* the total loss and the per-output losses of the compiled loss plan (plus the model's own losses when
  the module runs them, as :func:`~keras_bridge.trainer.module_step.compute_loss` adds them);
* the gradients of the total with respect to the tensors the optimizer steps (``torch.autograd.grad``
  inside the trace: the backward ops are the ones autograd's engine runs eagerly).

The program is replayed under ``torch.no_grad()``; the fused step then clears the gradients as it does
(after the forward pass, as Lightning does), assigns the program's gradients in place of
``loss.backward()`` (None for a tensor the loss does not reach, as backward leaves it; copied to the
parameter's strides where they differ, as autograd's gradient accumulation does) and steps the optimizer.
The metrics stay eager (they are stateful): ``update_metrics`` receives the outputs, the total and the
per-output losses as from the eager step. Per step of the MLP of ``bench/run.py`` this saves the
autograd graph's construction and traversal and the loss's Python: the fused step took ~990 instead of
~1160 µs (one thread, alternating in one process on a shared machine); each capture costs a trace
(~0.15 s for that MLP), once per signature and after each change of the guarded state.

What keeps it exact (the same rules as the captured forward pass):

* one graph per batch signature (shapes, dtypes, devices of ``x``, ``y`` and ``sample_weight``, their
  structure, Keras's and torch's global settings, whether the model's own losses are added); the first
  step of a signature runs eagerly (state a step sets once is settled), and it is captured at the first
  step after that whose forward pass the captured forward replays (normally the third: the model's
  own side effects and trace failures are found, and said, there first, once); at most ``max_graphs``
  signatures; a change of the tensors the optimizer steps captures again;
* the guard set (:class:`~keras_bridge.python_state.PythonState`) of the model, the loss plan, its loss
  terms and the loss objects they hold, narrowed to what the step's trace and the trace of the forward graph it
  replays read, is checked before every step: a changed value (a callback setting
  a loss's ``scale``, a layer's ``rate``) drops the graphs and each signature starts over as above; state
  that changed before 3 steps in a row runs the eager step from then on. The check runs in
  ``training_step``, after the callbacks' batch-start hooks, and costs ~25 µs per step for that MLP;
* a trace with a Python side effect (a counter in a loss or a layer, a list append, ``print``, Python or
  NumPy random numbers) is undone and the eager step runs from then on; a trace that fails (a loss with
  Python control flow on tensor values) leaves that signature to the eager step. Both are logged once at
  INFO (``keras_bridge`` logger);
* random ops (an unseeded ``Dropout``) draw from torch's global generator in the same order as eagerly,
  and in-place variable updates (``BatchNormalization``'s moving statistics) are replayed as ops of the
  graph, outside autograd.

When it is used (else the eager step runs, with the same numbers; the reason is logged at DEBUG):
``module.allow_captured_step`` is True; the model is a Keras model whose forward pass is captured
(``compile(jit_compile="auto")``) and has not gone eager; no Keras hook of the model's own
(``compute_loss``, ``compute_metrics``, ``train_step`` overridden in its class); ``forward``,
``compute_loss`` and ``update_metrics`` not overridden in a ``KerasModule`` subclass and no forward hook on
it; the optimizer clears gradients with torch's own ``zero_grad``; the model's trainable tensors are all
stepped by it; the fit has at least ``module.captured_step_min_steps`` training steps left (500 by default: a
shorter fit would spend more on the trace than the replays save); and, per step, a non-empty batch without DDP's
batch information and no gradient hook on a weight (``register_hook``: ``backward`` would run it).

Example:
    >>> import keras, numpy as np
    >>> from keras_bridge import KerasModule
    >>> inputs = keras.Input((3,))
    >>> module = KerasModule(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    >>> module.compile(optimizer="sgd", loss="mse")
    >>> module.captured_step_min_steps = 0  # a 4-step fit would not pay for its trace otherwise
    >>> _ = module.fit(np.ones((8, 3)), np.zeros((8, 1)), batch_size=2, verbose=0)
    >>> module.captured_step.captured, module.captured_step.replays  # 4 steps: 2 eager, 2 replayed
    (1, 2)
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from keras_bridge.capture import GuardedGraphs, call_signature, trace_program, unguarded_types
from keras_bridge.compile.loss_plan import add_model_losses
from keras_bridge.data.distributed import split_batch_info
from keras_bridge.python_state import PythonState
from keras_bridge.typing import TensorTree
from keras_bridge.utils.compat import gradient_hooks_set
from keras_bridge.utils.overrides import overridden
from keras_bridge.utils.tree import first_batch_dim, unpack_x_y_sample_weight

if TYPE_CHECKING:
    from keras_bridge.protocols import BridgeModule

__all__ = ["CapturedStep", "captured_step_refusal"]

Tensor = torch.Tensor


def captured_step_refusal(module: BridgeModule, base: type, optimizer: torch.optim.Optimizer) -> Optional[str]:
    """Why the eager step must run for this fit (checked once the module is built), or None.

    Args:
        module: the ``KerasModule`` (built: its trackers exist).
        base: ``KerasModule`` itself: methods ``type(module)`` defines otherwise are the user's.
        optimizer: the optimizer the fused step steps.
    """
    if not getattr(module, "allow_captured_step", True):
        return "module.allow_captured_step is False"
    minimum = getattr(module, "captured_step_min_steps", 0)
    steps = _steps_left(module)
    if steps < minimum:
        return (
            f"this fit has {steps:.0f} training steps left, fewer than module.captured_step_min_steps={minimum} "
            "(a trace would cost more than the steps save)"
        )
    if module.captured_forward is None:
        return "the forward pass is not captured"
    tracker = module.train_tracker
    if tracker is not None and tracker.hooks is not None:
        return "the Keras model overrides compute_loss, compute_metrics or train_step"
    redefined = overridden(module, base, ("forward", "compute_loss", "update_metrics", "_step"))
    if redefined:
        return f"{type(module).__name__} overrides {', '.join(redefined)}"
    if getattr(module, "_forward_hooks", None) or getattr(module, "_forward_pre_hooks", None):
        return "the module has forward hooks"
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        return f"{type(optimizer).__name__} clears gradients its own way"
    stepped = {id(p) for p in _stepped(optimizer)}
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    if not trainable:
        return "the model has no trainable weights"
    if any(id(p) not in stepped for p in trainable):
        return "the optimizer does not step every trainable weight of the model"
    return None


def _steps_left(module: BridgeModule) -> float:
    """The training steps this fit has left (infinite when Lightning cannot tell)."""
    trainer = module.trainer
    try:
        total = float(trainer.estimated_stepping_batches)
    except Exception:  # an iterable of unknown length, an infinite fit
        return float("inf")
    return total - trainer.global_step


def _stepped(optimizer: torch.optim.Optimizer) -> List[Tensor]:
    """The tensors the optimizer steps that take gradients, in its order."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


class _Program:
    """One captured step, the tensors whose gradients it returns, and what a failed replay must put back.

    A replay that raises (a label out of range) has already run the ops before the failing one: the
    variables the graph assigns in place and torch's random generators are put back as they were, so the
    eager step then runs the batch as if the replay never happened (and raises Keras's error, or not).
    """

    __slots__ = ("assigned", "devices", "graph", "params", "random", "run")

    def __init__(self, graph: torch.fx.GraphModule, params: Sequence[Tensor]) -> None:
        self.graph = graph
        self.run = graph.forward  # the generated code itself: a graph module's __call__ only adds Python frames
        self.params = tuple(params)
        assigned: Dict[int, Tensor] = {}
        self.random = False
        for node in graph.graph.nodes:
            if node.op != "call_function":
                continue
            self.random = self.random or torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())
            packet = getattr(node.target, "overloadpacket", None)
            target = node.args[0] if node.args else None
            if getattr(packet, "__name__", "").endswith("_") and isinstance(target, torch.fx.Node):
                if target.op == "get_attr":
                    tensor = operator.attrgetter(str(target.target))(graph)
                    assigned[id(tensor)] = tensor
        self.assigned = tuple(assigned.values())
        self.devices = tuple({t.device for t in self.params if t.device.type == "cuda"})

    def __call__(self, x: TensorTree, y: TensorTree, sw: TensorTree) -> Optional[Tuple[Any, ...]]:
        """The graph's outputs, or None (nothing changed) when it raised."""
        saved = [t.clone() for t in self.assigned]
        generators = (
            (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in self.devices]) if self.random else None
        )
        try:
            with torch.no_grad():
                return self.run(x, y, sw)
        except Exception:
            with torch.no_grad():
                for tensor, value in zip(self.assigned, saved):
                    tensor.copy_(value)
            if generators is not None:
                torch.set_rng_state(generators[0])
                for device, state in zip(self.devices, generators[1]):
                    torch.cuda.set_rng_state(state, device)
            return None


class CapturedStep(GuardedGraphs):
    """The training step of a Keras model replayed from one captured graph per batch signature (module docstring).

    Args:
        module: the ``KerasModule`` (its model, loss plan and trackers are read at each step).
        max_graphs: signatures kept; further new signatures run the eager step.

    Calling it with a batch and the optimizer returns ``(loss, params, grads)`` once the step ran from a graph
    (the metrics updated; :meth:`assign_gradients` then takes ``params, grads``), or None when the eager step
    must run that batch.
    """

    unit = "steps"

    def __init__(self, module: BridgeModule, max_graphs: int = 32) -> None:
        model = module.model
        super().__init__(f"the training step of {getattr(model, 'name', type(model).__name__)}", max_graphs)
        self.module = module
        self.replays = 0  # steps run from a graph

    def __call__(
        self, batch: object, optimizer: torch.optim.Optimizer
    ) -> Optional[Tuple[Tensor, Tuple[Tensor, ...], List[Optional[Tensor]]]]:
        module = self.module
        forward = module.captured_forward
        if self._eager_reason is not None or forward is None or forward.eager_reason is not None:
            return None
        batch, info = split_batch_info(batch)
        if info is not None:
            return None
        x, y, sw = unpack_x_y_sample_weight(batch)
        batch_size = first_batch_dim(x)
        if batch_size == 0:
            return None
        self._check_state()
        if self._eager_reason is not None:
            return None
        key = (call_signature((x, y, sw), True), module.run_regularizers)
        program = self._graphs.get(key)
        if program is None:
            self._graphs[key] = self._SEEN  # the eager step runs first: state it sets once is settled
            return None
        params = _stepped(optimizer)
        if program is self._SEEN:
            forward_graph = forward.graph_for(x, True)
            if forward_graph is None:
                # The forward pass is traced first, by the captured forward: a side effect or a trace failure of
                # the model's own is found (and said) there, once; this step then never captures.
                return None
            if forward.compile_graphs:  # a compiled graph is not traced through: the model's Python is
                forward_graph = None
            program = self._capture(x, y, sw, params, forward_graph) if self.captured < self.max_graphs else self._EAGER
            self._graphs[key] = program
        if not isinstance(program, _Program):
            return None
        if len(params) != len(program.params) or not all(map(operator.is_, params, program.params)):
            # The optimizer steps other tensors (a new param group, a weight made trainable): trace again.
            self._graphs[key] = self._SEEN
            return None
        if gradient_hooks_set(params):  # backward runs a weight's gradient hooks; the graph would not
            return None
        outputs = program(x, y, sw)
        if outputs is None:  # the eager step runs this batch (and raises Keras's error, where there is one)
            return None
        y_pred, total, output_losses, own_losses, grads = outputs
        self.replays += 1
        module.forward_losses = own_losses
        module.output_losses = output_losses
        module.step_inputs = x
        module.update_metrics(y, y_pred, sw, total, batch_size, training=True)
        module.step_inputs = None
        return total, program.params, grads

    @staticmethod
    def assign_gradients(params: Sequence[Tensor], grads: Sequence[Optional[Tensor]]) -> None:
        """Set ``.grad`` as ``backward`` into cleared gradients would: the parameter's strides, no shared tensor."""
        seen = set()
        for param, grad in zip(params, grads):
            if grad is not None:
                pointer = grad.data_ptr()
                if grad.stride() != param.stride() or pointer in seen:
                    grad = grad.new_empty_strided(param.size(), param.stride()).copy_(grad)
                seen.add(pointer)
            param.grad = grad

    def _roots(self) -> List[Any]:
        """What the traced step reads: the model, the loss plan, its terms and the loss objects they hold."""
        plan = self.module.loss_plan
        roots: List[Any] = [self.module.model, plan]
        # A term is followed two objects deep from here: the Keras loss object it holds, and that object's own.
        roots.extend(term.loss for term in plan.terms)
        return roots

    def _capture(
        self,
        x: TensorTree,
        y: TensorTree,
        sw: TensorTree,
        params: List[Tensor],
        forward_graph: Optional[Callable[..., Any]],
    ) -> Any:
        model: Any = self.module.model  # a Keras model (its variables and losses)
        plan, regularizers = self.module.loss_plan, self.module.run_regularizers

        def step(x: TensorTree, y: TensorTree, sw: TensorTree) -> Tuple[Any, ...]:
            # The captured forward's graph is what the eager step runs (the same ops, hence the same backward),
            # and tracing its few aten ops costs far less than tracing the model's Python again.
            if forward_graph is not None:
                y_pred, own = forward_graph(x)
                own_losses = list(own) if own else []
            else:
                y_pred, own_losses = model(x, training=True), list(model.losses)
            total, output_losses = plan(*plan.flatten_batch(y, y_pred, sw))
            if regularizers:
                total = add_model_losses(total, own_losses)
            grads = torch.autograd.grad(total, params, allow_unused=True)
            return y_pred, total, output_losses, own_losses, list(grads)

        self.traces += 1
        state = PythonState(self._roots(), skip=unguarded_types(reads_losses=True))
        trace = trace_program(step, (x, y, sw), model, state)
        # The forward graph replayed inside this one baked in what its own trace read: guarded here too.
        forward = self.module.captured_forward
        also_read = forward.reads if forward_graph is not None and forward is not None else None
        if not self._settle(trace, state, also_read) or trace.graph is None:
            return self._EAGER
        graph = trace.graph
        return _Program(graph, params)

    def _failure(self, reason: str) -> str:
        return f"(it could not be captured as one graph: {reason})"
