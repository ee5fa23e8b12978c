"""ModelCheckpoint end to end: every extension writes what it says, atomically, loadable by the right reader."""

import os

import keras
import numpy as np
import pytest
import torch
from keras import layers

import keras_bridge as kb


def make(kind):
    if kind == "torch":
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1))
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(inp))


def check_keras_file(kind, path, module):
    if kind == "keras":
        return keras.models.load_model(path).count_params() == sum(p.numel() for p in module.model.parameters())
    return type(kb.load_model(path).model) is type(module.model)


READERS = {
    ".keras": check_keras_file,
    ".h5": lambda kind, path, module: keras.models.load_model(path, compile=False) is not None,
    ".ckpt": lambda kind, path, module: "state_dict" in torch.load(path, weights_only=True),
    ".weights.pt": lambda kind, path, module: len(torch.load(path, weights_only=True)) > 0,
    ".weights.h5": lambda kind, path, module: kb.saving.load_weights(kb.KerasModule(make(kind)), path) is None,
}


@pytest.mark.parametrize("kind", ["torch", "keras"])
@pytest.mark.parametrize(
    "suffix, weights_only",
    [
        (".keras", False),
        (".h5", False),
        (".ckpt", False),
        (".ckpt", True),
        (".weights.pt", True),
        (".weights.h5", True),
    ],
)
def test_each_extension_writes_a_loadable_file(tmp_path, kind, suffix, weights_only):
    if suffix == ".h5" and kind == "torch":
        pytest.skip("Keras's legacy .h5 format holds Keras models only")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 5)).astype("float32"), rng.integers(0, 3, 24)
    module = kb.KerasModule(make(kind))
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    template = str(tmp_path / "ck" / f"m_{{epoch:02d}}_{{loss:.3f}}{suffix}")
    callback = kb.callbacks.ModelCheckpoint(template, monitor="loss", save_weights_only=weights_only)
    history = module.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    names = [f"m_{epoch + 1:02d}_{loss:.3f}{suffix}" for epoch, loss in enumerate(history.history["loss"])]
    assert sorted(os.listdir(tmp_path / "ck")) == names  # no temporary file left behind
    assert READERS[suffix](kind, str(tmp_path / "ck" / names[-1]), module)


@pytest.mark.parametrize(
    "kwargs",
    [dict(filepath="m.txt"), dict(filepath="m.weights.pt"), dict(filepath="m.keras", save_weights_only=True)],
    ids=str,
)
def test_extension_rules(kwargs):
    with pytest.raises(ValueError, match="must end in"):
        kb.callbacks.ModelCheckpoint(**kwargs)


def test_a_ckpt_resumes_a_lightning_run_exactly(tmp_path, monkeypatch):
    import lightning as L

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = x.sum(1, keepdims=True)

    def make():
        torch.manual_seed(0)
        module = kb.KerasModule(torch.nn.Linear(3, 1))
        module.compile(optimizer=kb.optimizers.SGD(0.05, momentum=0.9), loss="mse")
        return module

    make().fit(
        x,
        y,
        batch_size=8,
        shuffle=False,
        verbose=0,
        epochs=2,
        callbacks=[kb.callbacks.ModelCheckpoint("e{epoch}.ckpt", monitor="loss")],
    )
    unbroken = make()
    unbroken.fit(x, y, batch_size=8, shuffle=False, verbose=0, epochs=4)
    resumed = make()
    trainer = L.Trainer(
        max_epochs=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=kb.callbacks.to_lightning([]),
    )
    trainer.fit(resumed, datamodule=kb.data.KerasDataModule(x, y, batch_size=8, shuffle=False), ckpt_path="e2.ckpt")
    # The History continues: the checkpoint's epochs, then the resumed ones (issue 12, item 3).
    assert resumed.history.epoch == [0, 1, 2, 3]
    np.testing.assert_allclose(resumed.history.history["loss"], unbroken.history.history["loss"], rtol=1e-5)
    for a, b in zip(resumed.model.parameters(), unbroken.model.parameters()):
        torch.testing.assert_close(a, b)
