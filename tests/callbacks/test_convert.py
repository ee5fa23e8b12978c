"""to_lightning / from_config: Keras callbacks (objects or configs) on a plain lightning.Trainer."""

import lightning as L
import numpy as np
import pytest
import torch

import keras

import keras_bridge as kb


class Hooks(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_begin(self, logs=None):
        self.seen.append("train_begin")

    def on_test_begin(self, logs=None):
        self.seen.append("test_begin")

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(("epoch_end", epoch, sorted(logs)))


def lightning_run(callbacks, tmp_path, epochs=5, **trainer_kwargs):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 5)).astype("float32"), rng.integers(0, 3, 48)
    torch.manual_seed(0)
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1)))
    module.compile(optimizer=kb.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    dm = kb.data.KerasDataModule(x, y, batch_size=16, validation_split=0.25)
    trainer = L.Trainer(max_epochs=epochs, callbacks=kb.callbacks.to_lightning(callbacks), accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path), **trainer_kwargs)
    trainer.fit(module, datamodule=dm)
    return module, trainer


def test_plain_trainer_runs_keras_callbacks_without_the_sanity_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hooks = Hooks()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10, patience=1)
    module, trainer = lightning_run([hooks, stopper, {"class_name": "CSVLogger", "config": {"filename": "log.csv"}}],
                                    tmp_path, num_sanity_val_steps=2)
    assert hooks.seen[:2] == ["train_begin", "test_begin"]  # the sanity check never reached the callback
    assert hooks.seen[-1] == ("epoch_end", 1, ["accuracy", "loss", "val_accuracy", "val_loss"])
    assert stopper.stopped_epoch == 1 and trainer.current_epoch == 2
    assert module.history.epoch == [0, 1]
    assert hooks.params == {"verbose": 0, "epochs": 5, "steps": 3}
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "epoch,accuracy,loss,val_accuracy,val_loss"


def test_from_config_builds_every_keras_callback():
    cb = kb.callbacks.from_config({"class_name": "ReduceLROnPlateau", "config": {"factor": 0.5, "patience": 3}})
    assert isinstance(cb, keras.callbacks.ReduceLROnPlateau) and cb.factor == 0.5 and cb.patience == 3
    tb = kb.callbacks.from_config({"class_name": "TensorBoard", "config": {"log_dir": "logs"}})
    assert isinstance(tb, kb.callbacks.TensorBoard)  # the port, since Keras's needs TensorFlow
    ck = kb.callbacks.from_config({"class_name": "ModelCheckpoint", "config": {"filepath": "m_{epoch}.ckpt"}})
    assert isinstance(ck, keras.callbacks.ModelCheckpoint) and ck.filepath == "m_{epoch}.ckpt"


@pytest.mark.parametrize("config, match", [
    ({"class_name": "EarlyStoping", "config": {}}, "Unknown callback class_name='EarlyStoping'"),
    ({"class_name": "EarlyStopping", "config": {"patiense": 2}}, "EarlyStopping: unknown argument.*'patiense'"),
    ({"class_name": "CSVLogger", "config": {}}, "CSVLogger: missing required argument.*'filename'"),
    ({"class_name": "ReduceLROnPlateau", "config": {"factor": 2.0}}, "ReduceLROnPlateau: .*factor=2.0"),
    ({"class_name": "ModelCheckpoint", "config": {"filepath": "m.txt"}}, "ModelCheckpoint: .*filepath"),
    ({"class_name": "TensorBoard", "config": {"embeddings_freq": 1}}, "TensorBoard: .*embeddings_freq"),
    ({"config": {}}, "class_name"),
])
def test_untranslatable_configs_name_the_callback_and_argument(config, match):
    with pytest.raises(ValueError, match=match):
        kb.callbacks.to_lightning([config])


def test_unsupported_keras_callbacks_are_value_errors():
    with pytest.raises(ValueError, match="SwapEMAWeights"):
        kb.callbacks.to_lightning([keras.callbacks.SwapEMAWeights()])
    with pytest.raises(ValueError, match="Expected each callback"):
        kb.callbacks.to_lightning([object()])


def test_lightning_callbacks_pass_through():
    from lightning.pytorch.callbacks import LearningRateMonitor

    monitor = LearningRateMonitor()
    cbs = kb.callbacks.to_lightning([keras.callbacks.History(), monitor])
    assert cbs[1] is monitor and isinstance(cbs[0], kb.callbacks.KerasCallbackAdapter)
