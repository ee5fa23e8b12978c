"""A .ckpt written by Lightning's own ModelCheckpoint restores a compiled KerasModule (issue 12, item 3).

``KerasModule.load_from_checkpoint(path, model=...)`` and ``kb.load_model(path)`` give it back compiled
with its optimizer state; ``trainer.fit(module, ckpt_path=...)`` continues the Keras History.
"""

import glob

import keras
import lightning as L
import numpy as np
import pytest
import torch
from helpers import seeded_mlp
from lightning.pytorch.callbacks import ModelCheckpoint

import keras_bridge as kb
from keras_bridge.saving.lightning_checkpoint import KEY

FIT = dict(batch_size=8, validation_split=0.25)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 5)).astype("float32"), rng.integers(0, 3, 40)


def _model(kind):
    return seeded_mlp(kind, hidden=8)


def _compiled(kind):
    module = kb.KerasModule(_model(kind))
    module.compile(
        optimizer=keras.optimizers.Adam(0.02),  # Adam: its moments must come back for the numbers to match
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return module


def _trainer(epochs, root, callbacks=()):
    return L.Trainer(max_epochs=epochs, callbacks=[*kb.callbacks.to_lightning([]), *callbacks], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                     enable_checkpointing=bool(callbacks))  # fmt: skip


def _datamodule():
    x, y = _data()
    return kb.data.KerasDataModule(x, y, shuffle=False, **FIT)


def _weights(module):
    return [np.asarray(w) for w in module.get_weights()]


def _train_with_checkpoints(kind, root, epochs=2):
    module = _compiled(kind)
    checkpoint = ModelCheckpoint(dirpath=str(root / "ckpt"), save_top_k=-1, every_n_epochs=1)
    _trainer(epochs, root, [checkpoint]).fit(module, datamodule=_datamodule())
    return module, sorted(glob.glob(str(root / "ckpt" / "epoch=*.ckpt")))


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_load_from_checkpoint_and_load_model_restore_it_compiled(tmp_path, kind):
    trained, paths = _train_with_checkpoints(kind, tmp_path)
    first, last = paths
    checkpoint = torch.load(first, weights_only=True)  # plain data and tensors: no unpickling needed
    assert checkpoint[KEY]["compile_config"] is not None and checkpoint[KEY]["model_config"] is not None
    loaders = {
        "load_from_checkpoint": lambda: kb.KerasModule.load_from_checkpoint(first, model=_model(kind)),
        "load_model": lambda: kb.load_model(first),
    }
    for how, load in loaders.items():
        module = load()
        if kind == "keras":  # another instance: Keras named its variables differently
            assert module.model.variables[0].path != trained.model.variables[0].path
        assert module.compiled, how
        assert module.history.epoch == [0] and module.history.history["loss"] == trained.history.history["loss"][:1]
        assert module.loss_plan.arguments["loss"].get_config()["from_logits"], how
        # The next fit starts from the checkpoint's optimizer state: one more epoch lands on the last checkpoint.
        x, y = _data()
        module.fit(x, y, epochs=1, shuffle=False, verbose=0, **FIT)
        expected = kb.load_model(last)
        for a, b in zip(_weights(module), _weights(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=how)


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_resuming_a_lightning_run_continues_the_keras_history(tmp_path, kind):
    unbroken = _compiled(kind)
    _trainer(4, tmp_path / "unbroken").fit(unbroken, datamodule=_datamodule())
    _, paths = _train_with_checkpoints(kind, tmp_path)
    resumed = kb.KerasModule(_model(kind))  # not compiled: the checkpoint compiles it
    _trainer(4, tmp_path / "resumed").fit(resumed, datamodule=_datamodule(), ckpt_path=paths[-1])
    assert resumed.compiled and resumed.history.epoch == [0, 1, 2, 3]
    assert list(resumed.history.history) == list(unbroken.history.history)
    for key, values in unbroken.history.history.items():
        np.testing.assert_allclose(resumed.history.history[key], values, rtol=1e-5, err_msg=key)
    for a, b in zip(_weights(resumed), _weights(unbroken)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_module_compiled_at_construction_reloads_from_its_hyperparameters(tmp_path):
    module = kb.KerasModule(_model("torch"), optimizer={"class_name": "SGD", "config": {"learning_rate": 0.1}},
                            loss="sparse_categorical_crossentropy")  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path), filename="m")
    _trainer(1, tmp_path, [checkpoint]).fit(module, datamodule=_datamodule())
    saved = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["optimizer"]["class_name"] == "SGD"
    restored = kb.KerasModule.load_from_checkpoint(tmp_path / "m.ckpt", model=_model("torch"))
    assert restored.compiled and restored.optimizer_spec.name == "SGD"
    for a, b in zip(_weights(restored), _weights(module)):
        np.testing.assert_array_equal(a, b)


def test_load_model_refuses_a_checkpoint_without_the_bridge_entry(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a checkpoint of a KerasModule"):
        kb.load_model(path)


@keras.saving.register_keras_serializable(package="test_lightning_checkpoint")
class _TwoDense(keras.Model):
    """A subclassed model: Keras gives a copy it unpickles other variable paths."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, activation="relu")
        self.out = keras.layers.Dense(2)

    def call(self, x):
        return self.out(self.hidden(x))


def test_another_instances_state_loads_by_variable_order():
    """What Lightning does with a ddp_spawn worker's weights: ``load_state_dict(worker_state, strict=False)``."""
    import pickle

    module = kb.KerasModule(_TwoDense())
    module.compile(optimizer="sgd", loss="mse")
    module.fit(np.ones((4, 3), "float32"), np.zeros((4, 2), "float32"), epochs=1, verbose=0)
    worker = pickle.loads(pickle.dumps(module))
    assert set(worker.state_dict()) != set(module.state_dict())  # the rebuilt copy's paths differ
    for variable in worker.model.trainable_weights:
        variable.assign(variable.numpy() + 1.0)
    result = module.load_state_dict(worker.state_dict(), strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    for ours, theirs in zip(module.model.variables, worker.model.variables):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
