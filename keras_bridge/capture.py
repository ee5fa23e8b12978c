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

When the replay is used (the guard rule, checked before every call):

* **guarded**: the Python state the trace may have read (:class:`~keras_bridge.python_state.PythonState`:
  every attribute of the model, its layers and the plain objects they hold; the items of their lists,
  dicts and sets; NumPy arrays by value; the class attributes of user classes and the globals, module
  attributes and closure cells their methods name; not the optimizer, metrics, callbacks, compiled losses
  and ``KerasModule`` the model holds, which its forward pass does not read) and, in the graph's key,
  Keras's and torch's global settings (``floatx``, ``epsilon``, ``image_data_format``, the global dtype
  policy, torch's default dtype). Of each object's own attributes, only those the traces of the current graphs
  read are guarded (:meth:`~keras_bridge.python_state.PythonState.narrow`): a value no trace read is in no graph,
  so a callback setting an attribute the forward pass ignores drops nothing. A value that changed since the
  capture (a callback raising ``beta``, a ``Dropout`` ``rate`` or a bool switch set between fits, ``trainable``, a
  global) drops the graphs: each signature runs eagerly at its next call and is captured again at the one
  after. State that changed before 3 calls in a row makes the forward run eagerly from then on;
* **when**: at every call, before the graph runs (so a change made by a callback between two steps is
  seen by the next step); the first call of a signature runs eagerly (state it sets once, such as an
  attribute taken from the input's shape, is settled), the second captures;
* **side effects**: a trace that changes guarded state (a counter, a list append, an attribute set in
  ``call``), prints, or draws Python or NumPy random numbers is undone and the forward pass runs
  eagerly from then on, so each of those happens once per real call, as in Keras;
* **autograd**: a forward pass whose gradients a replay would change runs eagerly from then on
  (:mod:`keras_bridge.autograd_watch`): a custom gradient (``keras.ops.custom_gradient``, any
  ``torch.autograd.Function``), a tensor hook (``register_hook``), or a ``torch.no_grad()`` /
  ``torch.enable_grad()`` region around ops on tensors that take gradients. Autograd would differentiate the
  replayed aten ops instead;
* **cost**: comparing references in C, tens of microseconds per call for a model of a dozen layers
  (``PythonState`` of a 4-layer MLP: ~150 slots, ~20 µs on an idle core); TorchDynamo's guards
  (``torch.compile`` with a backend replaying the same graph) measured ~300 µs more per call and
  ~2.4 s per (re)capture against ~40 ms here, which is why the guard set is the bridge's own.

The captured graph is the traced one with three rewrites, none of which changes a value, a stride or a gradient:
in-place variable updates write detached values (as Keras assigns under ``torch.no_grad()``), ``detach`` nodes
nothing reads are dropped, and a copy of a copy nothing else reads is one copy (:func:`_merge_copies`).

Each fallback is logged once at INFO (``keras_bridge`` logger) with its reason. A model whose forward
cannot be traced at all (Python control flow on tensor values, a layer with its own seed, whose seed
Keras reads as a Python number) runs eagerly for that signature, and says so once at INFO too, with the
reason (an eager forward pass gives Keras's numbers, so it is not a warning).

Example:
    >>> import keras, torch
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> forward = CapturedForward(model)
    >>> _ = forward(torch.ones(4, 3), training=True)  # first call of a signature: eager
    >>> y, losses = forward(torch.ones(4, 3), training=True)
    >>> torch.allclose(y, model(torch.ones(4, 3))), forward.captured
    (True, 1)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from keras_bridge.autograd_watch import AutogradWatch
from keras_bridge.python_state import PythonState, watch_side_effects
from keras_bridge.typing import ArrayTree
from keras_bridge.utils.compat import pytree_flatten
from keras_bridge.utils.keras import import_keras

if TYPE_CHECKING:
    import keras

log = logging.getLogger("keras_bridge")
_EAGER: Any = object()  # a signature that could not be captured
_SEEN: Any = object()  # a signature called once (eagerly): captured at its next call
_CHANGES_BEFORE_EAGER = 3
Reads = Dict[int, Set[str]]  # id of a guarded object -> the names of its attributes a trace read


class Trace(NamedTuple):
    """What :func:`trace_program` gives: the graph (or the failure), a side effect found, the attributes read."""

    graph: Optional[torch.fx.GraphModule]
    failure: Optional[BaseException]
    side_effect: Optional[str]
    reads: Reads


def unguarded_types(reads_losses: bool = False) -> Tuple[type, ...]:
    """Objects a model holds that its forward pass does not read: they change at every step.

    The ``KerasModule`` training the model is one (a torch optimizer's facade, ``model.optimizer``, holds it),
    and so are the compiled losses (``model.loss``) unless the traced program ``reads_losses``.
    """
    import lightning.pytorch as pl

    keras = import_keras()
    unread = (keras.optimizers.Optimizer, keras.metrics.Metric, keras.callbacks.Callback, pl.LightningModule)
    return unread if reads_losses else unread + (keras.losses.Loss,)


def call_signature(x: ArrayTree, training: bool) -> Tuple[Any, ...]:
    """The key of a captured graph: what a trace bakes in besides the guarded Python state.

    The structure, shapes, dtypes and devices of ``x`` (other leaves by value), ``training``, autocast,
    grad mode and the global settings of :func:`_global_config`.

    Example:
        >>> import torch
        >>> call_signature(torch.ones(2, 3), True)[:3]
        (True, '*', (((2, 3), torch.float32, device(type='cpu')),))
        >>> call_signature((torch.ones(2, 3), torch.zeros(2), None), True)[1]
        'tuple**-'
    """
    if type(x) is torch.Tensor:  # the common case, without the tree walk: the key torch's pytree gives a leaf
        spec: Any = "*"
        described: Tuple[Any, ...] = ((tuple(x.shape), x.dtype, x.device),)
    elif type(x) is tuple and all(type(v) is torch.Tensor or v is None for v in x):
        # A batch's (x, y, sample_weight) of plain tensors, without the tree walk: where the Nones are is the structure.
        spec = "tuple" + "".join("-" if v is None else "*" for v in x)
        described = tuple((tuple(v.shape), v.dtype, v.device) for v in x if v is not None)
    else:
        leaves, spec = pytree_flatten(x)
        described = tuple(
            (tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else (type(v), v) for v in leaves
        )
    autocast = tuple(
        (device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda") if torch.is_autocast_enabled(device)
    )
    return (bool(training), str(spec), described, autocast, torch.is_grad_enabled(), _global_config())


def _global_config() -> Tuple[Any, ...]:
    """Keras's and torch's global settings that layers read while they run (part of a graph's key)."""
    config = import_keras().config
    return (
        config.floatx(),
        config.epsilon(),
        config.image_data_format(),
        config.dtype_policy().name,
        torch.get_default_dtype(),
    )


class GuardedGraphs:
    """Graphs captured per signature under one guard set, and the rule that drops them (see the module docstring).

    The bookkeeping shared by :class:`CapturedForward` and the captured training step
    (:mod:`keras_bridge.trainer.captured_step`): ``_graphs`` maps a signature to its graph, ``_SEEN`` (called
    once, eagerly) or ``_EAGER``; ``_state`` is the guard set of the graphs captured, set by the subclass.

    Args:
        subject: what runs eagerly, for the log lines ("functional", "the training step of functional").
        max_graphs: signatures kept; further new signatures run eagerly.
    """

    #: What the "changed before each of 3 ... in a row" reason counts.
    unit = "calls"
    _SEEN, _EAGER = _SEEN, _EAGER  # for subclasses in other modules

    def __init__(self, subject: str, max_graphs: int) -> None:
        self.subject = subject
        self.max_graphs = max_graphs
        self._graphs: Dict[Tuple[Any, ...], Any] = {}
        self._told = False
        self._state: Optional[PythonState] = None  # the guard set of the captured graphs
        self._reads: Reads = {}  # what the traces of the graphs captured under that guard set read
        self._eager_reason: Optional[str] = None
        self._changes_in_a_row = 0
        self.traces = 0  # graphs traced (again after each change of the guarded state)

    @property
    def captured(self) -> int:
        """How many signatures run from a captured graph."""
        return sum(1 for g in self._graphs.values() if g is not _EAGER and g is not _SEEN)

    @property
    def eager_reason(self) -> Optional[str]:
        """Why it runs eagerly for good (a side effect, ever-changing state), or None."""
        return self._eager_reason

    def __getstate__(self) -> Dict[str, Any]:
        """Pickled (a launcher sends the module) without its graphs and guard set: captured again where it runs."""
        state = dict(self.__dict__)
        state.update(_graphs={}, _state=None, _reads={})
        return state

    def _check_state(self) -> None:
        """Before each call: a change of the guarded state drops the graphs (see :meth:`_state_changed`)."""
        if self._eager_reason is None and self._state is not None:
            if self._state.changed():
                self._state_changed()
            else:
                self._changes_in_a_row = 0

    def _state_changed(self) -> None:
        """The guarded Python state changed: the graphs are captured again (or, if it keeps changing, not)."""
        self._state, self._reads = None, {}
        self._changes_in_a_row += 1
        if self._changes_in_a_row >= _CHANGES_BEFORE_EAGER:
            self._go_eager(f"its Python state changed before each of {_CHANGES_BEFORE_EAGER} {self.unit} in a row")
            return
        # Each signature starts over: eager at its next call, captured at the one after (a signature
        # used once per epoch, such as a last partial batch, is then never captured for nothing).
        self._graphs = {key: g for key, g in self._graphs.items() if g is _EAGER}

    def _go_eager(self, reason: str) -> None:
        self._eager_reason = reason
        self._graphs.clear()
        log.info("keras_bridge: %s runs eagerly from now on: %s.", self.subject, reason)

    @property
    def reads(self) -> Reads:
        """The attributes the graphs captured under the current guard set read (``id(obj)`` -> names)."""
        return self._reads

    def _settle(self, trace: Trace, state: PythonState, also_read: Optional[Reads] = None) -> bool:
        """After :func:`trace_program`: whether its graph is used (else why not is said, once).

        A used graph's guard set becomes ``state`` narrowed to what every graph captured under it read (this
        trace, the earlier ones since the guarded state last changed, and ``also_read``: what the traces of
        graphs this one replays read).
        """
        graph = trace.graph
        if trace.side_effect is not None:
            self._go_eager(f"{trace.side_effect} when it runs, which a captured graph would not repeat")
            return False
        if graph is None:
            self._tell(trace.failure if trace.failure is not None else RuntimeError("no graph"))
            return False
        self._reads = merge_reads(self._reads, trace.reads, also_read or {})
        state.narrow(self._reads)
        self._state = state
        _detach_variable_updates(graph)
        _drop_unused_detaches(graph)
        _merge_copies(graph)
        graph.recompile()  # once for both passes (each regenerates and compiles the graph's Python code)
        return True

    def _tell(self, err: BaseException) -> None:
        if not self._told:
            self._told = True
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:200]
            log.info("keras_bridge: %s runs eagerly %s.", self.subject, self._failure(reason))

    def _failure(self, reason: str) -> str:
        """The log line's words for a trace that raised (``reason``: the error, one line), after "runs eagerly"."""
        return f"(it could not be captured: {reason})"


class CapturedForward(GuardedGraphs):
    """``model(x, training)`` replayed from a captured graph per input signature (see the module docstring).

    Args:
        model: a Keras model (torch backend).
        max_graphs: signatures kept; further new signatures run eagerly.
        compile_graphs: also run each captured graph through ``torch.compile``.

    Calling it returns ``(y_pred, losses)``: the outputs and the model's ``losses`` of that call.
    """

    def __init__(self, model: keras.Model, max_graphs: int = 32, compile_graphs: bool = False) -> None:
        super().__init__(str(getattr(model, "name", type(model).__name__)), max_graphs)
        self.model = model
        self.compile_graphs = compile_graphs

    def graph_for(self, x: ArrayTree, training: bool) -> Optional[Callable[..., Any]]:
        """The captured graph ``x`` would run from now (its signature captured, the guarded state unchanged), or None.

        Called with ``x``, the graph returns ``(y_pred, losses)`` (``losses`` possibly None for none).
        """
        if self._eager_reason is not None or self._state is None or self._state.changed():
            return None
        graph = self._graphs.get(call_signature(x, training))
        return None if graph is None or graph is _EAGER or graph is _SEEN else graph

    def __call__(self, x: ArrayTree, training: bool) -> Tuple[Any, List[Any]]:
        self._check_state()
        if self._eager_reason is not None:
            return self._eager(x, training)
        key = call_signature(x, training)
        graph = self._graphs.get(key)
        if graph is None:
            # The first call of a signature runs eagerly: state a forward pass sets once (a lazy
            # build, an attribute taken from the input's shape) is settled before it is captured.
            self._graphs[key] = _SEEN
            return self._eager(x, training)
        if graph is _SEEN:
            graph = self._capture(x, training) if self.captured < self.max_graphs else _EAGER
            self._graphs[key] = graph
        if graph is _EAGER or self._eager_reason is not None:
            return self._eager(x, training)
        y_pred, losses = graph(x)
        return y_pred, list(losses) if losses else []

    def _eager(self, x: ArrayTree, training: bool) -> Tuple[Any, List[Any]]:
        return self.model(x, training=training), list(self.model.losses)

    def _capture(self, x: ArrayTree, training: bool) -> Any:
        model = self.model

        watch = AutogradWatch(variables=[v.value for v in model.variables])

        def forward(inputs: Any) -> Tuple[Any, List[Any]]:
            with watch:
                outputs = model(inputs, training=training), list(model.losses)
            watch.check_outputs(outputs)
            return outputs

        self.traces += 1
        state = PythonState([model], skip=unguarded_types())
        trace = trace_program(forward, (x,), model, state)
        if watch.reason is not None and trace.graph is not None:
            # Autograd would differentiate the replayed ops, not what the model does: its gradients would change.
            self._go_eager(watch.reason)
            return _EAGER
        graph = trace.graph
        if not self._settle(trace, state) or graph is None:
            return _EAGER
        # The generated code itself: a graph module has no hooks, so its __call__ would only add Python frames.
        return torch.compile(graph, dynamic=False) if self.compile_graphs else graph.forward

    def _failure(self, reason: str) -> str:
        return (
            f"(its forward pass could not be captured: {reason}). Pass compile(jit_compile=False) to skip the attempt"
        )


def trace_program(program: Callable[..., Any], args: Tuple[Any, ...], model: keras.Model, state: PythonState) -> Trace:
    """Trace ``program(*args)`` (which runs ``model``) into an aten graph, leaving no effect of the tracing.

    Tracing runs the Python code once on fake tensors: the in-place variable updates of that run must not
    stay (a replay makes them), nor may its Python side effects (``state``'s guard set, ``print``, Python
    and NumPy random numbers: see :func:`~keras_bridge.python_state.watch_side_effects`), which are undone.

    Returns:
        A :class:`Trace`: the graph, or None with the exception tracing raised; the first side effect found
        (a reason, for a log line), or None; and the attributes of the guarded objects the trace read.
    """
    saved = [v.value.detach().clone() for v in model.variables]
    graph: Optional[torch.fx.GraphModule] = None
    failure: Optional[BaseException] = None
    reads: Reads = {}
    try:
        with watch_side_effects(state) as side_effect:
            try:
                with state.recording_reads() as reads:
                    graph = make_fx(program, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
            except Exception as err:
                failure = err
            reason = side_effect()
    finally:
        with torch.no_grad():
            for variable, value in zip(model.variables, saved):
                variable.value.copy_(value)
    return Trace(graph, failure, reason, reads)


def merge_reads(*reads: Reads) -> Reads:
    """The union of attribute reads recorded by several traces (``id(obj)`` -> names)."""
    merged: Reads = {}
    for each in reads:
        for key, names in each.items():
            merged.setdefault(key, set()).update(names)
    return merged


def _drop_unused_detaches(graph: torch.fx.GraphModule) -> None:
    """Remove ``detach`` nodes nothing reads (Keras detaches activations it then leaves unused); recompile after.

    Only ``aten.detach``: it draws no random numbers and writes nothing, so removing it cannot change a value.
    """
    detach = torch.ops.aten.detach.default
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target is detach and not node.users:
            graph.graph.erase_node(node)


#: Memory formats that fix a copy's strides from its shape alone (``preserve_format`` follows the input's strides).
_EXPLICIT_FORMATS = (torch.contiguous_format, torch.channels_last, torch.channels_last_3d)


def _merge_copies(graph: torch.fx.GraphModule) -> None:
    """Fold a copy of a copy nothing else reads into one copy (``detach`` of a ``detach`` likewise); recompile after.

    Keras's torch convolutions copy a channels-last input to channels-first (``contiguous``) and then to torch's
    channels-last layout: two full copies of the input per call. ``clone(clone(x), memory_format=f)`` with an
    explicit ``f`` holds the same values with the same strides as ``clone(x, memory_format=f)`` (the strides of such
    a copy follow from its shape and ``f`` alone), and autograd passes a gradient through a copy unchanged, so the
    first copy is made in the second's format and the second dropped. ``detach`` of a ``detach`` is one ``detach``:
    the same view of the same values.
    """
    clone, detach = torch.ops.aten.clone.default, torch.ops.aten.detach.default
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target not in (clone, detach) or not node.args:
            continue
        inner = node.args[0]
        if not isinstance(inner, torch.fx.Node) or inner.target is not node.target or len(inner.users) != 1:
            continue
        if node.target is clone:
            if node.kwargs.get("memory_format") not in _EXPLICIT_FORMATS:
                continue
            # The one copy is made where the first was, so it reads the input before any later in-place op does.
            inner.kwargs = {**inner.kwargs, "memory_format": node.kwargs["memory_format"]}
            node.replace_all_uses_with(inner)
            graph.graph.erase_node(node)
        else:
            node.args = (inner.args[0],) + tuple(node.args[1:])
            graph.graph.erase_node(inner)


def _detach_variable_updates(graph: torch.fx.GraphModule) -> None:
    """Make the graph's in-place updates of model variables leave autograd alone, as eager Keras does; recompile after.

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
