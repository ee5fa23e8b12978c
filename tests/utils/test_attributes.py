"""PlainAttributeWrites: the same module as torch's own __setattr__ makes, for every kind of value."""

from __future__ import annotations

import pytest
import torch

from keras_bridge.utils.attributes import PlainAttributeWrites


class Plain(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flag = None
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("counts", torch.zeros(2))


class Fast(PlainAttributeWrites, Plain):
    pass


def _state(module: torch.nn.Module):
    return (
        sorted(n for n, _ in module.named_parameters(recurse=False)),
        sorted(n for n, _ in module.named_buffers(recurse=False)),
        sorted(n for n, _ in module.named_children()),
        sorted(k for k in vars(module) if not k.startswith("_") and k != "training"),
    )


WRITES = {
    "plain_over_plain": ("flag", "fit"),
    "number_over_plain": ("flag", 3),
    "new_plain": ("other", 1.5),
    "module_over_plain": ("flag", torch.nn.ReLU()),
    "parameter_over_plain": ("flag", torch.nn.Parameter(torch.ones(1))),
    "tensor_to_buffer": ("counts", torch.ones(2)),
    "none_to_buffer": ("counts", None),
    "none_to_submodule": ("linear", None),
    "none_to_parameter_holder": ("flag", None),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_a_write_leaves_the_module_as_torch_leaves_it(name):
    attribute, value = WRITES[name]
    plain, fast = Plain(), Fast()
    setattr(plain, attribute, value)
    setattr(fast, attribute, value)
    assert _state(fast) == _state(plain)
    assert getattr(fast, attribute) is getattr(plain, attribute) or getattr(plain, attribute) is None


@pytest.mark.parametrize("attribute, value", [("counts", "text"), ("linear", 3)])
def test_a_plain_value_over_a_buffer_or_submodule_is_refused_as_by_torch(attribute, value):
    with pytest.raises(TypeError) as torch_error:
        setattr(Plain(), attribute, value)
    with pytest.raises(TypeError) as fast_error:
        setattr(Fast(), attribute, value)
    assert str(fast_error.value) == str(torch_error.value)
