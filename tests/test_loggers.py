"""Lightning loggers get Keras's names: epoch logs, batch logs when asked, hyperparameters once (issue 12)."""

import csv

import keras
import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_bridge as kb

KERAS_KEYS = ["accuracy", "loss", "val_accuracy", "val_loss"]


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(48, 5)).astype("float32"), rng.integers(0, 3, 48)


def _module(kind="torch"):
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    if kind == "keras":
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    else:
        model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1))
    module = kb.KerasModule(model)
    module.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return module


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scalars(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class RecordingLogger(Logger):
    """Any Logger: what it receives."""

    def __init__(self):
        super().__init__()
        self.hparams, self.metrics = [], []

    @property
    def name(self):
        return "recording"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        self.hparams.append(dict(params))

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_tensorboard_and_csv_logger_files_carry_keras_names(tmp_path, kind):
    x, y = _data()
    loggers = [TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path), name="csv")]
    history = _module(kind).fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
                                trainer={"logger": loggers}).history  # fmt: skip
    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert set(rows[0]) == {*KERAS_KEYS, "epoch", "step"}  # no batch logs unless asked
    for key in KERAS_KEYS:
        logged = [float(r[key]) for r in rows if r[key]]
        np.testing.assert_allclose(logged, history[key], rtol=1e-6, err_msg=key)
    scalars = _scalars(tmp_path / "tb" / "version_0")
    assert set(scalars) == {*KERAS_KEYS, "epoch", "hp_metric"}
    for key in KERAS_KEYS:
        np.testing.assert_allclose(scalars[key], history[key], rtol=1e-6, err_msg=key)
    for folder in ("csv", "tb"):  # the hyperparameters: compile arguments as Keras configs, batch size, epochs
        hparams = yaml.safe_load((tmp_path / folder / "version_0" / "hparams.yaml").read_text())
        assert hparams["optimizer"]["class_name"] == "SGD" and hparams["optimizer"]["config"]["learning_rate"] == 0.5
        assert hparams["loss"] == "sparse_categorical_crossentropy" and hparams["metrics"] == ["accuracy"]
        assert (hparams["batch_size"], hparams["epochs"], hparams["validation_split"]) == (16, 3, 0.25)


def test_batch_logs_reach_the_loggers_when_asked(tmp_path):
    x, y = _data()
    logger = CSVLogger(str(tmp_path), name="csv")
    # 3 batches an epoch; log_every_n_steps=3 logs each epoch's last batch: Keras's running means.
    history = _module().fit(x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
                            trainer={"logger": logger, "log_every_n_steps": 3}).history  # fmt: skip
    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert set(rows[0]) == {*KERAS_KEYS, "batch_accuracy", "batch_loss", "epoch", "step"}
    batch_rows = [r for r in rows if r["batch_loss"]]
    assert [int(r["step"]) for r in batch_rows] == [2, 5]
    np.testing.assert_allclose([float(r["batch_loss"]) for r in batch_rows], history["loss"], rtol=1e-6)
    np.testing.assert_allclose([float(r["batch_accuracy"]) for r in batch_rows], history["accuracy"], rtol=1e-6)


def test_any_logger_gets_the_hyperparameters_once_and_keras_names(tmp_path):
    x, y = _data()
    logger = RecordingLogger()
    module = _module()
    module.fit(x, y, batch_size=8, epochs=3, validation_split=0.25, verbose=0, trainer={"logger": logger})
    assert len(logger.hparams) == 1
    assert {"optimizer", "loss", "metrics", "batch_size", "epochs"} <= set(logger.hparams[0])
    assert (logger.hparams[0]["batch_size"], logger.hparams[0]["epochs"]) == (8, 3)
    assert {key for _, metrics in logger.metrics for key in metrics} == {*KERAS_KEYS, "epoch"}
    module.evaluate(x, y, verbose=0, trainer={"logger": logger})  # evaluate logs without the val_ prefix
    assert set(logger.metrics[-1][1]) == {"accuracy", "loss", "epoch"} and len(logger.hparams) == 1


def test_a_plain_trainer_logs_keras_names_and_the_datamodule_batch_size(tmp_path):
    x, y = _data()
    module = _module()
    trainer = L.Trainer(max_epochs=2, logger=CSVLogger(str(tmp_path), name="csv"), log_every_n_steps=1,
                        callbacks=kb.callbacks.to_lightning([]), enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)  # fmt: skip
    trainer.fit(module, datamodule=kb.data.KerasDataModule(x, y, batch_size=16, validation_split=0.25))
    rows = _csv_rows(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert set(rows[0]) == {*KERAS_KEYS, "batch_accuracy", "batch_loss", "epoch", "step"}
    np.testing.assert_allclose([float(r["loss"]) for r in rows if r["loss"]], module.history.history["loss"])
    hparams = yaml.safe_load((tmp_path / "csv" / "version_0" / "hparams.yaml").read_text())
    assert (hparams["batch_size"], hparams["epochs"]) == (16, 2)


def test_mlflow_logger_records_keras_names_and_hyperparameters(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="MLflow is optional: pip install mlflow-skinny")
    from lightning.pytorch.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store unless asked

    x, y = _data()
    uri = (tmp_path / "mlruns").as_uri()  # a file store in tmp_path: no server, no network
    logger = MLFlowLogger(experiment_name="keras_bridge", tracking_uri=uri)
    history = _module().fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
                            trainer={"logger": logger}).history  # fmt: skip
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    for key in KERAS_KEYS:
        logged = [m.value for m in sorted(client.get_metric_history(logger.run_id, key), key=lambda m: m.step)]
        np.testing.assert_allclose(logged, history[key], rtol=1e-6, err_msg=key)
    params = client.get_run(logger.run_id).data.params
    assert params["loss"] == "sparse_categorical_crossentropy" and (params["batch_size"], params["epochs"]) == (
        "16",
        "3",
    )


def test_wandb_offline_logger_records_keras_names_and_hyperparameters(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="W&B is optional: pip install wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")  # no network: the run is written under tmp_path only
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    x, y = _data()
    logger = WandbLogger(project="keras_bridge", save_dir=str(tmp_path), offline=True)
    try:
        history = _module().fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0,
                                trainer={"logger": logger}).history  # fmt: skip
        run = logger.experiment
        for key in KERAS_KEYS:  # the summary keeps each key's last value
            np.testing.assert_allclose(run.summary[key], history[key][-1], rtol=1e-6, err_msg=key)
        assert run.config["loss"] == "sparse_categorical_crossentropy"
        assert (run.config["batch_size"], run.config["epochs"]) == (16, 3)
    finally:
        wandb.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
