"""The Python state a Keras forward pass may read, watched so a captured graph is replayed only while it holds.

A captured graph (:mod:`keras_bridge.capture`) bakes in every Python value the forward pass read while
it was traced: a layer's ``rate`` or ``beta``, a ``trainable`` flag, a bool switch, a global of the
user's module. :class:`PythonState` collects that state once per capture and answers, before each
replay, whether any of it changed since; :func:`watch_side_effects` tells whether running the forward
pass changed Python state itself (a counter, a list it appends to, ``print``, Python or NumPy random
numbers), which a replay would not repeat.

What is guarded (the *guard set*):

* every attribute of the model, of each of its layers and of the plain objects they hold (regularizers,
  dtype policies, seed generators, variables), and of the objects held one container deep: values of
  numbers, bools, strings, ``None`` and tuples by value, everything else by identity;
* the items of the lists, dicts and sets held by those attributes (by identity), and the contents of
  NumPy arrays held by them (by value);
* for each class of those objects defined outside Keras and torch (the user's layers and models): its
  class attributes, and the globals, module attributes and closure cells its methods name, followed
  into the user's own functions they call.

Narrowed to what a trace read: :meth:`PythonState.recording_reads` records, while a graph is traced, which
attributes of each guarded object the traced code reads; :meth:`PythonState.narrow` then guards only those
attributes of those objects (a name read and absent is guarded as absent, so an instance attribute added later
that shadows it counts). A value the forward pass never read cannot be baked into its graph, so a callback
setting an attribute no layer reads (Keras's ``History`` setting ``model.history``, a ``beta`` kept on a layer
whose ``call`` ignores it) drops no graph. An object read as a whole (``vars(obj)``, ``obj.__dict__``, a copy or
pickle of it) stays guarded whole, and so does an object of a class with its own ``__getattr__`` or
``__getattribute__`` (other than ``torch.nn.Module``'s, which reads only its parameter, buffer and submodule
registries: such classes are where ``object.__getattribute__(obj, name)``, which no recording sees, is called), or
one whose reads cannot be recorded.

Cost: a check compares references, in C (``map(operator.is_, ...)``): about 20-40 µs per step for a
model of a dozen layers (see ``docs``); only a changed reference is compared by value (a rebinding to
an equal number is no change).

Example:
    >>> import keras
    >>> layer = keras.layers.Dropout(0.5)
    >>> state = PythonState([layer])
    >>> state.changed()
    False
    >>> layer.rate = 0.25
    >>> state.changed()
    True
"""

from __future__ import annotations

import contextlib
import io
import operator
import random
import sys
import types
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import torch

from keras_bridge.utils.compat import caller_code

_LIBRARIES = ("keras", "torch", "numpy", "lightning", "pytorch_lightning", "torchmetrics", "keras_bridge", "builtins")
_MISSING = object()
# What torch.nn.Module.__init__ sets (hook and parameter registries, the ``training`` flag Lightning
# toggles): Keras layers keep their state elsewhere, take ``training`` as an argument and call no torch
# hooks, so these containers are guarded only as references and ``training`` not at all.
_TORCH_MODULE_BOOKKEEPING = frozenset(vars(torch.nn.Module()))
_VALUE_TYPES = (int, float, complex, str, bytes, bool, type(None))
# Read recording: "__dict__" read by other code means every attribute may have been read. torch.nn.Module's own
# attribute hooks read the instance dict only for its three registries (parameters, buffers, submodules).
_WHOLE = "__dict__"
# Names through which code reads the whole instance dict in C rather than attribute by attribute (copying, pickling).
_WHOLE_READERS = frozenset({_WHOLE, "__getstate__", "__reduce_ex__", "__reduce__"})
_MODULE_REGISTRIES = ("_parameters", "_buffers", "_modules")
_MODULE_DICT_READERS = frozenset(
    f.__code__ for f in (torch.nn.Module.__getattr__, torch.nn.Module.__setattr__, torch.nn.Module.__delattr__)
)
_OWN_LOOKUP = ("__getattr__", "__getattribute__")


def _same_value(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are one object, or equal numbers/strings/``None``/tuples of those of one type."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, _VALUE_TYPES):
        return bool(a == b) or (a != a and b != b)  # NaN equals NaN here: the graph would be the same
    if isinstance(a, tuple):
        return len(a) == len(b) and all(map(_same_value, a, b))
    return False


def _is_user_code(obj: object) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] not in _LIBRARIES


def _is_plain_object(value: object) -> bool:
    """An object whose attributes a forward pass may read (not a module, class, function or tensor)."""
    if isinstance(value, (types.ModuleType, type, types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        return False
    if isinstance(value, (torch.Tensor, np.ndarray, torch.optim.Optimizer)):
        return False
    return hasattr(value, "__dict__") and not isinstance(value, _VALUE_TYPES)


class _Slots:
    """References held in one mapping, compared by identity (all of its keys, or the names given)."""

    __slots__ = ("keys", "mapping", "names", "owner", "values")

    def __init__(self, mapping: Any, names: Optional[Tuple[str, ...]] = None, owner: object = None) -> None:
        self.mapping = mapping
        self.names = names
        self.owner = owner  # a class or module: its mapping is read-only, restored with setattr
        self.refresh()

    def refresh(self) -> None:
        if self.names is None:
            self.keys = tuple(self.mapping)
            self.values = tuple(self.mapping.values())
        else:
            self.keys = self.names
            self.values = tuple(self.mapping.get(n, _MISSING) for n in self.names)

    def same(self) -> bool:
        m = self.mapping
        if self.names is None:
            return (
                len(m) == len(self.keys)
                and all(map(operator.is_, m.values(), self.values))
                and all(map(operator.is_, m, self.keys))
            )
        return all(map(operator.is_, map(m.get, self.names, [_MISSING] * len(self.names)), self.values))

    def equal(self, unread: Tuple[type, ...] = ()) -> bool:
        """No change but rebinding to equal values (checked after :meth:`same`).

        Entries holding ``unread`` objects (an optimizer, a metric, a callback: Keras's ``History`` sets
        ``model.history`` at each epoch's end) and torch's ``training`` flag do not count.
        """
        current = _Slots(self.mapping, self.names, self.owner)

        def read(keys: Tuple[Any, ...], values: Tuple[Any, ...]) -> List[Tuple[Any, Any]]:
            return [(k, v) for k, v in zip(keys, values) if k != "training" and not isinstance(v, unread)]

        now, then = read(current.keys, current.values), read(self.keys, self.values)
        return len(now) == len(then) and all(a == c and _same_value(b, d) for (a, b), (c, d) in zip(now, then))

    def restore(self) -> None:
        if self.owner is not None:
            for key in [k for k in self.mapping if self.names is None and k not in self.keys]:
                delattr(self.owner, key)
            for key, value in zip(self.keys, self.values):
                if value is _MISSING:
                    if hasattr(self.owner, key):
                        delattr(self.owner, key)
                elif self.mapping.get(key, _MISSING) is not value:
                    setattr(self.owner, key, value)
            return
        m = self.mapping
        if self.names is None:
            for key in [k for k in m if k not in self.keys]:
                del m[key]
            m.update(zip(self.keys, self.values))
            return
        for name, value in zip(self.names, self.values):
            if value is _MISSING:
                m.pop(name, None)
            else:
                m[name] = value


class _Items:
    """The items of a list, dict or set held by the guarded state, compared by identity."""

    __slots__ = ("container", "items")

    def __init__(self, container: Any) -> None:
        self.container = container
        self.refresh()

    def refresh(self) -> None:
        c = self.container
        self.items = tuple(c.items()) if isinstance(c, dict) else (set(c) if isinstance(c, set) else tuple(c))

    def same(self) -> bool:
        c = self.container
        if isinstance(c, set):
            return c == self.items
        if len(c) != len(self.items):
            return False
        if isinstance(c, dict):
            return all(a is k and b is v for (a, b), (k, v) in zip(c.items(), self.items))
        return all(map(operator.is_, c, self.items))

    def equal(self, unread: Tuple[type, ...] = ()) -> bool:
        return False

    def restore(self) -> None:
        c = self.container
        if isinstance(c, dict):
            c.clear()
            c.update(self.items)
        elif isinstance(c, set):
            c.clear()
            c.update(self.items)
        else:
            c[:] = list(self.items)


class _Array:
    """A NumPy array held by the guarded state, compared by value (it may be changed in place)."""

    __slots__ = ("array", "saved")

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.refresh()

    def refresh(self) -> None:
        self.saved = self.array.copy()

    def same(self) -> bool:
        return self.array.shape == self.saved.shape and bool(np.array_equal(self.array, self.saved, equal_nan=True))

    def equal(self, unread: Tuple[type, ...] = ()) -> bool:
        return False

    def restore(self) -> None:
        self.array[...] = self.saved


class _Cell:
    """A closure cell of a user function the forward pass may call."""

    __slots__ = ("cell", "value")

    def __init__(self, cell: Any) -> None:
        self.cell = cell
        self.refresh()

    def _get(self) -> Any:
        try:
            return self.cell.cell_contents
        except ValueError:  # an empty cell
            return _MISSING

    def refresh(self) -> None:
        self.value = self._get()

    def same(self) -> bool:
        return self._get() is self.value

    def equal(self, unread: Tuple[type, ...] = ()) -> bool:
        return _same_value(self._get(), self.value)

    def restore(self) -> None:
        if self.value is not _MISSING:
            self.cell.cell_contents = self.value


class PythonState:
    """The guard set of the objects given (see the module docstring), and whether it changed.

    Args:
        roots: the objects a forward pass starts from (the model; its layers are found from it).
        skip: objects never guarded (the bridge's own optimizer and metrics, say).
    """

    def __init__(self, roots: List[Any], skip: Tuple[type, ...] = ()) -> None:
        self._skip = skip
        self._seen: Set[int] = set()
        self._functions: Set[int] = set()
        self.slots: List[Any] = []
        # id -> (object, the slot of its instance dict): what recording_reads watches and narrow narrows.
        self._instances: Dict[int, Tuple[object, _Slots]] = {}
        for root in roots:
            self._add_object(root, depth=0)
        self._freeze()

    # ------------------------------------------------------------------ collecting
    def _add_object(self, obj: object, depth: int) -> None:
        if id(obj) in self._seen or isinstance(obj, self._skip):
            return
        self._seen.add(id(obj))
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict):
            return
        slot = _Slots(attributes)
        self.slots.append(slot)
        self._instances[id(obj)] = (obj, slot)
        for cls in type(obj).__mro__:
            if _is_user_code(cls) and id(cls) not in self._seen:
                self._seen.add(id(cls))
                self.slots.append(_Slots(vars(cls), owner=cls))
                for member in vars(cls).values():
                    self._add_function(member)
        for name, value in attributes.items():
            if name not in _TORCH_MODULE_BOOKKEEPING:
                self._add_value(value, depth)

    def _add_value(self, value: object, depth: int, in_container: bool = False) -> None:
        if isinstance(value, np.ndarray):
            self.slots.append(_Array(value))
        elif isinstance(value, (list, dict, set)):
            if in_container or id(value) in self._seen:
                return
            self._seen.add(id(value))
            self.slots.append(_Items(value))
            for item in value.values() if isinstance(value, dict) else value:
                self._add_value(item, depth, in_container=True)
        elif isinstance(value, types.FunctionType):
            self._add_function(value)
        elif _is_plain_object(value) and (depth < 2 or _is_layer(value)):
            self._add_object(value, depth + 1)

    def _add_function(self, member: object) -> None:
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        elif isinstance(member, property):
            for accessor in (member.fget, member.fset):
                self._add_function(accessor)
            return
        if not isinstance(member, types.FunctionType) or not _is_user_code(member) or id(member) in self._functions:
            return
        self._functions.add(id(member))
        self.slots.extend(_Cell(cell) for cell in member.__closure__ or ())
        for cell in member.__closure__ or ():
            contents = _Cell(cell).value
            if contents is not _MISSING:
                self._add_value(contents, depth=1)
        names = tuple(sorted(set(_code_names(member.__code__))))
        scope = member.__globals__
        present = tuple(n for n in names if n in scope)
        if present:
            self.slots.append(_Slots(scope, present))
        for name in present:
            value = scope[name]
            if isinstance(value, types.ModuleType):
                if _is_user_code(value) or value.__name__.split(".")[0] not in _LIBRARIES:
                    attrs = tuple(n for n in names if n in vars(value))
                    self.slots.append(_Slots(vars(value), attrs, owner=value))
            elif isinstance(value, type):
                if _is_user_code(value) and id(value) not in self._seen:
                    self._seen.add(id(value))
                    self.slots.append(_Slots(vars(value), owner=value))
                    for item in vars(value).values():
                        self._add_function(item)
            else:
                self._add_value(value, depth=1)

    # ------------------------------------------------------------------ narrowing to what a trace read
    @contextlib.contextmanager
    def recording_reads(self) -> Iterator[Dict[int, Set[str]]]:
        """Record, inside the block, the attributes read of each guarded object (for :meth:`narrow`).

        Yields a dict from ``id(obj)`` to the names read. Recording swaps the ``__getattribute__`` of the guarded
        objects' classes for the block; an object whose reads cannot be recorded (a class with its own
        attribute lookup, a class that refuses the swap) is marked as read whole.
        """
        reads: Dict[int, Set[str]] = {key: set() for key in self._instances}
        swapped: List[Tuple[type, Any]] = []
        try:
            for cls in {type(obj) for obj, _ in self._instances.values()}:
                if not _swap_lookup(cls, reads, swapped):
                    for key, (obj, _) in self._instances.items():
                        if type(obj) is cls:
                            reads[key].add(_WHOLE)
            yield reads
        finally:
            for cls, previous in reversed(swapped):
                if previous is None:
                    delattr(cls, "__getattribute__")
                else:
                    cls.__getattribute__ = previous

    def narrow(self, reads: Dict[int, Set[str]]) -> None:
        """Guard, of each object's own attributes, only the names in ``reads`` (from :meth:`recording_reads`).

        An object absent from ``reads`` or read whole stays guarded whole. Call it after the side-effect check
        of the trace (:func:`watch_side_effects` compares the whole guard set).
        """
        for key, (_, slot) in self._instances.items():
            names = reads.get(key)
            if names is None or _WHOLE in names or slot.names is not None:
                continue
            slot.names = tuple(sorted(names))
            slot.refresh()
        self._freeze()

    # ------------------------------------------------------------------ checking
    def _freeze(self) -> None:
        """Flatten every reference the fast check compares into tuples (once per collection/refresh)."""
        whole = [s for s in self.slots if isinstance(s, _Slots) and s.names is None]
        named = [s for s in self.slots if isinstance(s, _Slots) and s.names is not None and type(s.mapping) is dict]
        items = [s for s in self.slots if isinstance(s, _Items)]
        self._mappings = [s.mapping for s in whole] + [s.container for s in items if isinstance(s.container, dict)]
        self._sequences = [s.container for s in items if not isinstance(s.container, dict)]
        self._others = [s for s in self.slots if not isinstance(s, _Items) and s not in whole and s not in named]
        self._lengths = (tuple(map(len, self._mappings)), tuple(map(len, self._sequences)))
        self._values = tuple(chain.from_iterable(map(_values, self._mappings)))
        self._items = tuple(chain.from_iterable(self._sequences))
        # The named entries of plain dicts (narrowed instance dicts, globals, module attributes), looked up in C.
        keys = tuple(chain.from_iterable(s.names or () for s in named))
        maps = tuple(chain.from_iterable([s.mapping] * len(s.names or ()) for s in named))
        self._named_lookup = (maps, keys, (_MISSING,) * len(keys))  # dict.get(mapping, key, _MISSING), pair by pair
        self._named_values = tuple(chain.from_iterable(s.values for s in named))

    def _same(self) -> bool:
        """Every guarded reference is the one collected (compared in C: the per-step fast path)."""
        return (
            (tuple(map(len, self._mappings)), tuple(map(len, self._sequences))) == self._lengths
            and all(map(operator.is_, chain.from_iterable(map(_values, self._mappings)), self._values))
            and all(map(operator.is_, map(dict.get, *self._named_lookup), self._named_values))
            and all(map(operator.is_, chain.from_iterable(self._sequences), self._items))
            and all(slot.same() for slot in self._others)
        )

    def changed(self) -> bool:
        """Whether any guarded value changed since collection (or the last :meth:`changed` call).

        References rebound to equal values are taken as they are now (no change).
        """
        if self._same():
            return False
        for slot in self.slots:
            if not slot.same():
                if not slot.equal(self._skip):
                    return True
                slot.refresh()
        self._freeze()
        return False

    def changed_slots(self) -> List[Any]:
        """The slots whose values changed (rebinding to equal values aside), for :meth:`restore`."""
        changed = []
        for slot in self.slots:
            if not slot.same():
                if slot.equal(self._skip):
                    slot.refresh()
                else:
                    changed.append(slot)
        self._freeze()
        return changed

    @staticmethod
    def restore(slots: List[Any]) -> None:
        """Put back the values ``slots`` held when collected."""
        for slot in slots:
            slot.restore()


_values = operator.methodcaller("values")


def _swap_lookup(cls: type, reads: Dict[int, Set[str]], swapped: List[Tuple[type, Any]]) -> bool:
    """Give ``cls`` a ``__getattribute__`` that notes each read of a watched object; False if it cannot be."""
    if any(name in vars(k) for k in cls.__mro__ if k not in (object, torch.nn.Module) for name in _OWN_LOOKUP):
        return False
    original: Callable[[Any, str], Any] = cls.__getattribute__  # type: ignore[assignment]
    previous = vars(cls).get("__getattribute__")

    def __getattribute__(self: object, name: str) -> Any:
        names = reads.get(id(self))
        if names is not None:
            if name not in _WHOLE_READERS:
                names.add(name)
            elif name == _WHOLE and caller_code(1) in _MODULE_DICT_READERS:
                names.update(_MODULE_REGISTRIES)
            else:
                names.add(_WHOLE)
        return original(self, name)

    try:
        cls.__getattribute__ = __getattribute__  # type: ignore[method-assign,assignment]
    except Exception:  # a built-in or extension type, a metaclass refusing it
        return False
    swapped.append((cls, previous))
    return True


def _is_layer(value: object) -> bool:
    # Keras layers (and models) are always followed, however deep: the forward pass calls them.
    return hasattr(value, "_flatten_layers") and hasattr(value, "call")


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


@contextlib.contextmanager
def watch_side_effects(state: PythonState) -> Iterator[Callable[[], Optional[str]]]:
    """Run a block with its Python side effects watched; the yielded function names the first one.

    Watched: the guard set of ``state`` (a value changed: a counter, an attribute, a list appended
    to), ``print`` to standard output (captured, not shown), and Python's and NumPy's global random
    states. Call the yielded function inside the block, after the code to watch has run; when it
    reports a side effect, everything watched is put back as it was before the block (the caller then
    runs the code again for real).
    """
    python_random = random.getstate()
    numpy_random = np.random.get_state()
    out = io.StringIO()
    found: Dict[str, Any] = {}

    def check() -> Optional[str]:
        changed = state.changed_slots()
        if changed:
            state.restore(changed)
            found["reason"] = "it changes Python state (an attribute, a list or a global)"
        if random.getstate() != python_random:
            random.setstate(python_random)
            found.setdefault("reason", "it draws Python random numbers")
        if not _same_numpy_state(np.random.get_state(), numpy_random):
            np.random.set_state(numpy_random)
            found.setdefault("reason", "it draws NumPy random numbers")
        if out.getvalue():
            found.setdefault("reason", "it prints")
        return found.get("reason")

    with contextlib.redirect_stdout(out):
        yield check
    if "reason" not in found and out.getvalue():
        sys.stdout.write(out.getvalue())  # not reported by check(): keep what was printed


def _same_numpy_state(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))
