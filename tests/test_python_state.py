"""The guard set narrowed to what a trace read: attributes never read are not guarded, everything read is."""

import copy

import keras
import pytest
import torch

from keras_bridge.python_state import PythonState


class Holder:
    """A plain object a forward pass might read."""

    def __init__(self):
        self.scale = 2.0
        self.note = "unread"

    def apply(self, x):
        return x * self.scale


class ReadsWhole(Holder):
    def apply(self, x):
        return x * vars(self)["scale"]


class CopiesItself(Holder):
    def apply(self, x):
        return x * copy.copy(self).scale  # the copy reads the instance dict in C


class OwnLookup(Holder):
    def __getattr__(self, name):  # attribute lookup of its own: its reads cannot be told apart
        raise AttributeError(name)


class MaybeBoosted:
    def apply(self, x):
        return x * getattr(self, "boost", 1.0)


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(2, 2)  # a submodule: read through torch's own __getattr__
        self.gain = 3.0
        self.label = "unread"

    def forward(self, x):
        return self.inner(x) * self.gain


def narrowed(obj, run):
    state = PythonState([obj])
    with state.recording_reads() as reads:
        run()
    state.narrow(reads)
    return state


@pytest.mark.parametrize(
    "make, run, unread, read",
    [
        (Holder, lambda o: o.apply(1.0), ("note", "x"), ("scale", 3.0)),
        (MaybeBoosted, lambda o: o.apply(1.0), ("other", 1), ("boost", 2.0)),  # read while absent: adding it counts
        (TorchBlock, lambda o: o(torch.ones(1, 2)), ("label", "read"), ("gain", 4.0)),
    ],
    ids=["attribute", "absent_attribute", "torch_module"],
)
def test_an_unread_attribute_is_not_guarded_and_a_read_one_is(make, run, unread, read):
    obj = make()
    state = narrowed(obj, lambda: run(obj))
    setattr(obj, *unread)
    assert not state.changed()
    setattr(obj, *read)
    assert state.changed()


@pytest.mark.parametrize("make", [ReadsWhole, CopiesItself, OwnLookup], ids=["vars", "copy", "own_getattr"])
def test_an_object_read_whole_or_unrecordable_stays_guarded_whole(make):
    obj = make()
    state = narrowed(obj, lambda: obj.apply(1.0))
    obj.note = "changed"
    assert state.changed()


def test_a_keras_layer_is_guarded_by_what_its_call_read():
    layer = keras.layers.Dropout(0.5)
    x = torch.ones(4, 3)
    layer(x, training=False)
    state = narrowed(layer, lambda: layer(x, training=True))
    layer.beta = 0.5  # kept on the layer, never read by Dropout.call
    assert not state.changed()
    layer.rate = 0.25
    assert state.changed()


def test_recording_puts_every_class_lookup_back_even_when_the_block_raises():
    obj, block = Holder(), TorchBlock()
    before = (Holder.__getattribute__, TorchBlock.__getattribute__, "__getattribute__" in vars(Holder))
    state = PythonState([obj, block])
    with pytest.raises(RuntimeError):
        with state.recording_reads():
            obj.apply(1.0)
            raise RuntimeError("trace failed")
    assert (Holder.__getattribute__, TorchBlock.__getattribute__, "__getattribute__" in vars(Holder)) == before
    assert torch.nn.Module.__getattribute__ is object.__getattribute__
