"""keras_bridge.callbacks.host: one protocol, two providers (the KerasModule itself, or a view of any module)."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from _plain_module import Net, modules

import keras_bridge as kb
from keras_bridge.callbacks.host import CallbackHost, LoggedMetricsHost, callback_host, logged_floats


def test_a_keras_module_is_its_own_host_any_other_module_gets_a_view():
    module = modules()["keras"]
    assert callback_host(module) is module
    plain = Net()
    host = callback_host(plain)
    assert isinstance(host, LoggedMetricsHost) and host.model is plain and not host.is_keras
    assert isinstance(host.callback_model, kb.callbacks.TorchModelFacade) and host.callback_model is host.callback_model
    for provider in (module, host):  # the attributes the driver reads, on both
        assert all(hasattr(provider, name) for name in CallbackHost.__annotations__)


def test_the_view_reads_and_writes_the_state_dict_in_order():
    host = callback_host(Net())
    weights = host.get_weights()
    assert [w.shape for w in weights] == [(1, 4), (1,)]
    host.set_weights([np.full_like(w, 2.0) for w in weights])
    assert all(torch.all(t == 2.0) for t in host.model.state_dict().values())
    with pytest.raises(ValueError, match=r"Expected `weights` to hold 2 arrays"):
        host.set_weights(weights[:1])


def test_without_a_trainer_there_are_no_logs():
    host = callback_host(Net())
    assert host.batch_logs() == host.finish_train_epoch() == host.finish_eval_epoch() == {}
    assert isinstance(host.model, pl.LightningModule)


@pytest.mark.parametrize(
    "logged, expected",
    [
        ({"loss": torch.tensor(0.5), "loss_step": torch.tensor(0.7), "loss_epoch": torch.tensor(0.5)}, {"loss": 0.5}),
        ({"val_loss": 1, "acc_epoch": torch.tensor(0.25)}, {"acc_epoch": 0.25, "val_loss": 1.0}),  # no `acc`: kept
    ],
)
def test_logged_values_are_floats_each_name_once(logged, expected):
    assert logged_floats(logged) == expected
    assert list(logged_floats(logged)) == sorted(expected)
