"""to_lightning / from_config: Keras callbacks (objects, configs or config files) on a plain lightning.Trainer."""

import json

import keras
import lightning as L
import numpy as np
import pytest
import torch

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
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=kb.callbacks.to_lightning(callbacks),
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    return module, trainer


def test_plain_trainer_runs_keras_callbacks_without_the_sanity_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hooks = Hooks()
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10, patience=1)
    module, trainer = lightning_run(
        [hooks, stopper, {"class_name": "CSVLogger", "config": {"filename": "log.csv"}}],
        tmp_path,
        num_sanity_val_steps=2,
    )
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


@pytest.mark.parametrize(
    "config, match",
    [
        ({"class_name": "EarlyStoping", "config": {}}, "Unknown callback class_name='EarlyStoping'"),
        ({"class_name": "EarlyStopping", "config": {"patiense": 2}}, "EarlyStopping: unknown argument.*'patiense'"),
        ({"class_name": "CSVLogger", "config": {}}, "CSVLogger: missing required argument.*'filename'"),
        ({"class_name": "ReduceLROnPlateau", "config": {"factor": 2.0}}, "ReduceLROnPlateau: .*factor=2.0"),
        ({"class_name": "ModelCheckpoint", "config": {"filepath": "m.txt"}}, "ModelCheckpoint: .*filepath"),
        ({"class_name": "TensorBoard", "config": {"embeddings_freq": 1}}, "TensorBoard: .*embeddings_freq"),
        ({"config": {}}, "class_name"),
    ],
)
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
    assert cbs[1] is monitor and isinstance(cbs[0], kb.callbacks.KerasCallbackDriver)


# ---------------------------------------------------------------------------- config files (issue 12)
@keras.saving.register_keras_serializable(package="kb_test_convert")
class EpochCounter(keras.callbacks.Callback):
    def __init__(self, every=1):
        super().__init__()
        self.every = every
        self.seen = []

    def get_config(self):  # what Keras needs to register a class
        return {"every": self.every}

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0:
            self.seen.append(epoch)


def _callback_configs():
    # Keras's serialized shape (module, registered_name) and the short one, mixed.
    return [
        {"module": "keras.callbacks", "class_name": "EarlyStopping", "registered_name": None,
         "config": {"monitor": "val_loss", "min_delta": 0.05, "patience": 1}},
        {"class_name": "CSVLogger", "config": {"filename": "log.csv"}},
        {"class_name": "ModelCheckpoint", "config": {"filepath": "m_{epoch}.weights.pt", "save_weights_only": True}},
        {"class_name": "EpochCounter", "registered_name": "kb_test_convert>EpochCounter", "config": {"every": 2}},
    ]  # fmt: skip


def _callback_objects():
    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0.05, patience=1),
        keras.callbacks.CSVLogger("log.csv"),
        kb.callbacks.ModelCheckpoint("m_{epoch}.weights.pt", save_weights_only=True),
        EpochCounter(every=2),
    ]


def _files(folder):
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".pt":
            out[path.name] = [t.numpy().tolist() for t in torch.load(path, weights_only=True).values()]
        elif path.suffix == ".csv":
            out[path.name] = path.read_text()
    return out


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_file_of_callback_configs_behaves_as_the_objects_in_fit(tmp_path, monkeypatch, suffix):
    import yaml

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 5)).astype("float32"), rng.integers(0, 3, 48)
    config_file = tmp_path / f"callbacks{suffix}"
    dump = json.dumps if suffix == ".json" else yaml.safe_dump
    config_file.write_text(dump(_callback_configs()))
    runs = {}
    for name, callbacks in (("objects", _callback_objects()), ("file", str(config_file))):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        torch.manual_seed(0)
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1)))
        module.compile(optimizer=kb.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = module.fit(x, y, batch_size=16, epochs=8, validation_split=0.25, verbose=0, callbacks=callbacks)
        runs[name] = (history.epoch, _files(folder))
    assert runs["file"] == runs["objects"]
    epochs, files = runs["objects"]
    assert len(epochs) < 8  # EarlyStopping stopped the run
    assert sorted(files) == ["log.csv"] + sorted(f"m_{e + 1}.weights.pt" for e in epochs)


def test_a_file_of_callback_configs_behaves_as_the_objects_in_to_lightning(tmp_path, monkeypatch):
    config_file = tmp_path / "callbacks.json"
    config_file.write_text(json.dumps(_callback_configs()))
    runs = {}
    for name, callbacks in (("objects", _callback_objects()), ("file", str(config_file))):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        module, trainer = lightning_run(callbacks, folder, epochs=8)
        counter = next(cb for cb in trainer.callbacks[0].user_callbacks if isinstance(cb, EpochCounter))
        runs[name] = (trainer.current_epoch, module.history.epoch, counter.seen, _files(folder))
    assert runs["file"] == runs["objects"]
    assert runs["objects"][0] < 8 and runs["objects"][2] == [e for e in runs["objects"][1] if e % 2 == 0]


def test_keras_callbacks_takes_configs_for_a_cli_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cb = kb.callbacks.KerasCallbacks(_callback_configs()[:2])
    assert [type(c).__name__ for c in cb.all] == ["EarlyStopping", "CSVLogger", "History"]
    module, trainer = lightning_run([cb], tmp_path, epochs=8)
    assert module.history is cb.history and trainer.current_epoch == len(module.history.epoch) < 8
    assert (tmp_path / "log.csv").exists()
    with pytest.raises(ValueError, match="list the Lightning callbacks"):
        kb.callbacks.KerasCallbacks([L.pytorch.callbacks.LearningRateMonitor()])


@pytest.mark.parametrize("config, match", [
    ({"class_name": "EarlyStopping", "confg": {}},
     r"Invalid `callbacks` config: unknown key 'confg'\. A Keras config has the keys 'class_name', 'config', "),
    ({"class_name": "EarlyStoping"}, r"Unknown callback class_name='EarlyStoping'\. Did you mean 'EarlyStopping'\?"),
    ({"class_name": "EarlyStopping", "config": {"monitr": "val_loss"}},
     r"EarlyStopping: unknown argument\(s\) 'monitr'\. Did you mean 'monitor'\? EarlyStopping takes: baseline"),
    ({"class_name": "EpochCounter", "registered_name": "kb_test_convert>EpochCounter", "config": {"evry": 2}},
     r"EpochCounter: unknown argument\(s\) 'evry'.* takes: every"),
    ({"class_name": "Adam", "registered_name": None}, r"Unknown callback class_name='Adam'"),
])  # fmt: skip
def test_a_bad_callback_config_names_the_key_and_the_accepted_ones(config, match):
    with pytest.raises(ValueError, match=match):
        kb.callbacks.from_config(config)


def test_a_callback_config_file_must_hold_configs(tmp_path):
    path = tmp_path / "callbacks.json"
    path.write_text(json.dumps("EarlyStopping"))
    with pytest.raises(ValueError, match="to hold a list of callback configs"):
        kb.callbacks.to_lightning(str(path))
