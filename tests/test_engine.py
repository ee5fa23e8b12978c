"""fit/evaluate/predict plumbing: History, trainer options, no stray files, Keras data rules."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import keras_bridge as kb


def linear_module(seed=0):
    torch.manual_seed(seed)
    module = kb.KerasModule(torch.nn.Linear(3, 1))
    module.compile(optimizer=kb.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    return module


def data(n=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype("float32")
    return x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def test_history_object(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    module = linear_module()
    history = module.fit(x, y, batch_size=8, epochs=3, initial_epoch=1, validation_split=0.2, verbose=0)
    assert history.epoch == [1, 2]
    assert history.params == {"verbose": 0, "epochs": 3, "steps": 2}
    assert list(history.history) == ["loss", "mae", "val_loss", "val_mae"]
    assert module.history is history
    # no lightning_logs/, no .ckpt, nothing at all
    assert list(tmp_path.iterdir()) == []


def test_trainer_dict_and_ready_trainer_give_the_same_numbers():
    x, y = data()
    with pytest.raises(ValueError, match="max_epochs=99.*epochs"):
        linear_module().fit(x, y, epochs=2, verbose=0, trainer={"max_epochs": 99})
    a = linear_module().fit(x, y, epochs=2, shuffle=False, verbose=0, trainer={"accelerator": "cpu", "max_epochs": 2})
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    b = linear_module().fit(x, y, epochs=2, shuffle=False, verbose=0, trainer=trainer)
    assert len(a.history["loss"]) == 2
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-6)


def test_epoch_loss_is_sample_weighted_mean_and_batch_loss_by_hand():
    # one epoch, lr 0: every batch sees the initial weights, so the epoch loss is computable by hand
    x, y = data(10)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    module = kb.KerasModule(net)
    module.compile(optimizer=kb.optimizers.SGD(0.0), loss="mse")
    w = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 2], "float32")
    history = module.fit(x, y, sample_weight=w, batch_size=4, epochs=1, shuffle=False, verbose=0)
    with torch.no_grad():
        per_sample = ((net(torch.from_numpy(x)) - torch.from_numpy(y)) ** 2).mean(-1).numpy()
    batches = [slice(0, 4), slice(4, 8), slice(8, 10)]
    batch_losses = [(w[b] * per_sample[b]).sum() / len(per_sample[b]) for b in batches]  # sum(w*l)/N
    expected = sum(l * len(per_sample[b]) for l, b in zip(batch_losses, batches)) / 10  # sample-count weighted
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)


def test_shuffle_modes_visit_every_sample_once_per_epoch():
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(1, 1)

        def forward(self, x):
            seen.append(x[:, 0].long().tolist())
            return self.lin(x)

    x = np.arange(10, dtype="float32").reshape(-1, 1)
    for shuffle in (True, "batch", False):
        seen.clear()
        module = kb.KerasModule(Recorder())
        module.compile(optimizer="sgd", loss="mse")
        module.fit(x, x, batch_size=4, epochs=2, shuffle=shuffle, verbose=0)
        epochs = seen[1:4], seen[4:7]  # seen[0] is the build pass
        for batches in epochs:
            assert sorted(sum(batches, [])) == list(range(10))
            if shuffle == "batch" or shuffle is False:
                assert [sorted(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        if shuffle is False:
            assert epochs[0] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
        if shuffle is True:
            assert epochs[0] != epochs[1]


def test_validation_split_takes_the_last_samples():
    x, y = data(10)
    module = linear_module()
    h = module.fit(x, y, epochs=1, validation_split=0.3, shuffle=True, verbose=0)
    ev = module.evaluate(x[7:], y[7:], verbose=0, return_dict=True)
    np.testing.assert_allclose(h.history["val_loss"][0], ev["loss"], rtol=1e-6)


def test_predict_single_output_and_batch_size_default():
    x, _ = data(70)
    module = linear_module()
    pred = module.predict(x, verbose=0)
    with torch.no_grad():
        np.testing.assert_allclose(pred, module.model(torch.from_numpy(x)).numpy(), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"validation_freq": 0}, {"epochs": -1}, {"verbose": 3}, {"shuffle": "yes"}])
def test_bad_fit_options(bad):
    x, y = data()
    with pytest.raises(ValueError, match=next(iter(bad))):
        linear_module().fit(x, y, **bad)


def test_fit_accepts_callback_configs():
    x, y = data()
    module = linear_module()
    config = {"class_name": "EarlyStopping", "config": {"monitor": "loss", "patience": 0, "min_delta": 100.0}}
    history = module.fit(x, y, epochs=5, verbose=0, callbacks=[config])
    # min_delta=100 means no epoch ever improves: Keras stops at the second epoch (epoch index 1)
    assert history.epoch == [0, 1]
    with pytest.raises(ValueError, match="EarlyStoping"):
        module.fit(x, y, epochs=1, verbose=0, callbacks=[{"class_name": "EarlyStoping", "config": {}}])
