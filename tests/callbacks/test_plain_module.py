"""Keras callbacks through ``to_lightning`` on a user's own LightningModule in a plain Trainer.

The same callbacks on the same network, batches and logged values give what they give on a KerasModule
(stop epoch, learning rates, restored weights, CSV rows, checkpoint files); the numbers no KerasModule
has (step values as batch logs, epochs without validation) are checked against values worked out by hand.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import torch
import yaml
from _plain_module import EPOCHS, LR, Data, Net, loaders, modules, quiet_trainer, read_h5, run
from helpers import subprocess_env

import keras_bridge as kb

KINDS = ("plain", "keras")
DDP_SCRIPT = Path(__file__).with_name("_ddp_plain_module.py")


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The case of ``_plain_module`` run on the plain module and on the KerasModule, each in its own folder."""
    root = tmp_path_factory.mktemp("plain")
    return {kind: (run(kind, str(root / kind)), root / kind) for kind in KINDS}


def test_stop_epoch_learning_rates_and_restored_weights_are_the_keras_modules(both):
    plain, keras_module = both["plain"][0], both["keras"][0]
    # Worked out by hand from the schedule: the rate jumps to 1.2 at epochs 3 and 4 (the validation loss
    # rises), ReduceLROnPlateau halves it at each of their ends, EarlyStopping(patience=2) stops after epoch 4.
    assert plain["best_epoch"] == keras_module["best_epoch"] == 2
    assert plain["stopped_epoch"] == keras_module["stopped_epoch"] == 4
    assert plain["epochs_run"] == keras_module["epochs_run"] == 5 < EPOCHS
    f32 = [float(np.float32(v)) for v in (LR, 0.6)]
    assert plain["probe"]["lrs"] == keras_module["probe"]["lrs"] == [f32[0]] * 3 + [f32[1]] * 2
    assert plain["history"]["learning_rate"] == keras_module["history"]["learning_rate"]
    assert list(plain["history"]) == list(keras_module["history"]) == ["loss", "val_loss", "learning_rate"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(plain["history"][key], keras_module["history"][key], rtol=1e-6, err_msg=key)
    # restore_best_weights: the weights of epoch 2 (the best checkpoint, best_3) on both.
    best = both["plain"][1] / "best_3.weights.h5"
    restored = [np.asarray(w) for w in plain["weights"]]
    for mine, theirs, saved in zip(restored, keras_module["weights"], read_h5(str(best)).values()):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)
        np.testing.assert_array_equal(mine, saved)


def test_csv_rows_and_checkpoint_files_are_the_keras_modules(both):
    (plain, plain_dir), (keras_module, keras_dir) = both["plain"], both["keras"]
    assert plain["csv"][0] == keras_module["csv"][0] == ["epoch", "learning_rate", "loss", "val_loss"]
    assert len(plain["csv"]) == 1 + plain["epochs_run"]
    np.testing.assert_allclose(np.array(plain["csv"][1:], dtype=float), np.array(keras_module["csv"][1:], dtype=float),
                               rtol=1e-6)  # fmt: skip
    # save_best_only: a file at each improvement (epochs 1, 2, 3 in Keras's 1-based names), no other file.
    assert sorted(plain["files"]) == sorted(keras_module["files"]) == [f"best_{e}.weights.h5" for e in (1, 2, 3)]
    for name, arrays in plain["files"].items():
        assert list(arrays) == list(keras_module["files"][name])
        for key, values in arrays.items():
            np.testing.assert_allclose(values, keras_module["files"][name][key], rtol=1e-6, err_msg=name)
    assert sorted(os.listdir(plain_dir)) == sorted(os.listdir(keras_dir))


def test_a_users_callback_gets_its_hooks_and_logs(both):
    plain, keras_module = both["plain"][0]["probe"], both["keras"][0]["probe"]
    assert plain["hooks"] == keras_module["hooks"]
    assert plain["hooks"][0] == "train_begin" and plain["hooks"][-1] == ("train_end", True)
    assert plain["hooks"][1:3] == [("epoch_begin", 0), ("epoch_end", 0, ["learning_rate", "loss", "val_loss"])]
    # Batch logs are what the module logged for the batch: for the first batch of an epoch that is
    # also Keras's running mean (the mean of one batch), the KerasModule's batch log.
    np.testing.assert_allclose([b["loss"] for b in plain["first_batch_logs"]],
                               [b["loss"] for b in keras_module["first_batch_logs"]], rtol=1e-6)  # fmt: skip


class _LogsRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs, self.batches = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append(dict(logs))

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def test_logs_are_what_the_module_logs_and_val_keys_only_after_a_validation():
    recorder = _LogsRecorder()
    module = modules()["plain"]
    train, val = loaders()
    quiet_trainer(kb.callbacks.to_lightning([recorder]), max_epochs=2, check_val_every_n_epoch=2).fit(
        module, train, val
    )
    # Worked out by hand: the step value of each batch (3 batches of 16 per epoch), and per epoch the
    # mean of the three (Lightning's on_epoch mean, equal batch sizes); val_loss only at epoch 1.
    assert [sorted(logs) for logs in recorder.epochs] == [["loss"], ["loss", "val_loss"]]
    assert [sorted(b) for b in recorder.batches] == [["loss"]] * 6
    for epoch in range(2):
        steps = [b["loss"] for b in recorder.batches[3 * epoch : 3 * epoch + 3]]
        np.testing.assert_allclose(recorder.epochs[epoch]["loss"], np.mean(steps), rtol=1e-6)


def test_the_model_view_saves_in_the_bridges_torch_formats(tmp_path):
    class Saver(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.weights = self.model.get_weights()
            self.model.set_weights([w * 0 + 1 for w in self.weights])
            for name in ("w.weights.pt", "w.weights.h5", "w.ckpt"):
                self.model.save_weights(str(tmp_path / name))

    saver = Saver()
    module = modules()["plain"]
    before = [t.clone() for t in module.state_dict().values()]
    quiet_trainer(kb.callbacks.to_lightning([saver]), max_epochs=1).fit(module, *loaders())
    after = [t.detach().clone() for t in module.state_dict().values()]
    assert all(not torch.equal(a, b) for a, b in zip(after, before))  # trained, then set to ones
    assert all(torch.equal(t, torch.ones_like(t)) for t in after)
    assert [w.shape for w in saver.weights] == [(1, 4), (1,)]
    state = torch.load(tmp_path / "w.weights.pt", weights_only=True)
    assert list(state) == ["dense.weight", "dense.bias"]
    assert all(torch.equal(s, a) for s, a in zip(state.values(), after))
    assert [np.asarray(v).tolist() for v in read_h5(str(tmp_path / "w.weights.h5")).values()] == [
        t.tolist() for t in after
    ]
    ckpt = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert torch.equal(ckpt["state_dict"]["dense.weight"], after[0])
    fresh = Net()
    kb.callbacks.host.callback_host(fresh).load_weights(str(tmp_path / "w.weights.h5"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), after))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"monitor": "val_acc"}, r"EarlyStopping reads 'val_acc' from the epoch logs, which do not hold it\. "
                                 r"Logged keys: 'loss', 'val_loss'"),
        ({"monitor": "val_loss_typo", "mode": "min"}, None),
    ],
)  # fmt: skip
@pytest.mark.parametrize("kind", KINDS)
def test_a_monitored_key_the_module_never_logs(kwargs, match, kind):
    cbs = kb.callbacks.to_lightning([keras.callbacks.EarlyStopping(**kwargs)])
    trainer = quiet_trainer(cbs, max_epochs=1)
    if match is not None:
        with pytest.raises(ValueError, match=match):
            trainer.fit(modules()[kind], *loaders())
    else:  # Keras warns here, and so do we, in its words
        with pytest.warns(UserWarning, match="Early stopping conditioned on metric `val_loss_typo` which is not "
                                             "available. Available metrics are: loss,val_loss"):  # fmt: skip
            trainer.fit(modules()[kind], *loaders())


CONFIGS = [
    {"class_name": "EarlyStopping", "config": {"monitor": "val_loss", "patience": 2, "restore_best_weights": True}},
    {"class_name": "ReduceLROnPlateau", "config": {"monitor": "val_loss", "factor": 0.5, "patience": 0}},
    {"class_name": "CSVLogger", "config": {"filename": "log.csv"}},
]


def _schedule_callback():
    from _plain_module import schedule

    return keras.callbacks.LearningRateScheduler(schedule)


def test_a_callbacks_file_runs_as_the_objects(tmp_path, monkeypatch, both):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "callbacks.json").write_text(json.dumps(CONFIGS))
    module = modules()["plain"]
    cbs = kb.callbacks.to_lightning(["callbacks.json", _schedule_callback()])
    quiet_trainer(cbs, max_epochs=EPOCHS).fit(module, *loaders())
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows == (both["plain"][1] / "log.csv").read_text().splitlines()  # same run as with the objects
    assert [w.tolist() for w in module.state_dict().values()] == both["plain"][0]["weights"]


def test_a_lightning_cli_yaml_runs_a_plain_module(tmp_path, monkeypatch, both):
    from lightning.pytorch.cli import LightningCLI

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    config = {
        "trainer": {
            "max_epochs": 3, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0,
            "callbacks": [{"class_path": "keras_bridge.callbacks.KerasCallbacks", "init_args": {"callbacks": CONFIGS}}],
        }
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cli = LightningCLI(Net, Data, args=["fit", "--config", "run.yaml"], save_config_callback=None)
    driver = next(cb for cb in cli.trainer.callbacks if isinstance(cb, kb.callbacks.KerasCallbacks))
    np.testing.assert_allclose(driver.history.history["val_loss"], both["plain"][0]["history"]["val_loss"][:3],
                               rtol=1e-6)  # fmt: skip
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    assert sorted(os.listdir(tmp_path)) == ["log.csv", "run.yaml"]


@pytest.mark.ddp
@pytest.mark.slow
def test_under_ddp_as_on_a_keras_module(tmp_path):
    proc = subprocess.run([sys.executable, str(DDP_SCRIPT)], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    deadline = time.time() + 60  # rank 1 may finish writing its record just after rank 0 exits
    while not (tmp_path / "keras_seen_1.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    seen = {(k, r): json.loads((tmp_path / f"{k}_seen_{r}.json").read_text()) for k in KINDS for r in (0, 1)}
    for kind in KINDS:
        rank0, rank1 = seen[kind, 0], seen[kind, 1]
        # rank 1 alone asked to stop after epoch 3: both stopped there, with one history, rate and weights
        assert rank0["epochs_run"] == rank1["epochs_run"] == 4
        assert rank0["probe"]["hooks"] == rank1["probe"]["hooks"] and rank0["probe"]["hooks"][-1] == ["train_end", True]
        assert rank0["history"] == rank1["history"] and rank0["probe"]["lrs"] == rank1["probe"]["lrs"]
        assert rank0["weights"] == rank1["weights"]
        # files once, from rank 0: one CSV row per epoch; val_loss improved at every epoch (half the
        # batches per process): a checkpoint for each (Keras's 1-based names)
        assert sorted(os.listdir(tmp_path / kind)) == [f"best_{e}.weights.h5" for e in (1, 2, 3, 4)] + ["log.csv"]
        assert len(rank0["csv"]) == 1 + 4
    plain, keras_module = seen["plain", 0], seen["keras", 0]
    assert plain["probe"]["hooks"] == keras_module["probe"]["hooks"]
    assert plain["probe"]["lrs"] == keras_module["probe"]["lrs"]
    assert plain["best_epoch"] == keras_module["best_epoch"] == 3
    assert plain["history"]["learning_rate"] == keras_module["history"]["learning_rate"]
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(plain["history"][key], keras_module["history"][key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(np.array(plain["csv"][1:], dtype=float), np.array(keras_module["csv"][1:], dtype=float),
                               rtol=1e-5)  # fmt: skip
    for mine, theirs in zip(plain["weights"], keras_module["weights"]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
    for name, arrays in plain["files"].items():
        for key, values in arrays.items():
            np.testing.assert_allclose(values, keras_module["files"][name][key], rtol=1e-5, err_msg=name)


def _layout(root):
    """Each file under ``root`` by folder and kind (event files carry a time and a pid in their names)."""
    return sorted((os.path.relpath(d, root), sorted(n.split(".")[0] if "tfevents" in n else n for n in files))
                  for d, _, files in os.walk(root))  # fmt: skip


@pytest.mark.parametrize(
    "make",
    [
        lambda d: keras.callbacks.TensorBoard(os.path.join(d, "tb"), histogram_freq=1),
        lambda d: keras.callbacks.BackupAndRestore(os.path.join(d, "backup"), delete_checkpoint=False),
        lambda d: keras.callbacks.TerminateOnNaN(),
        lambda d: keras.callbacks.History(),
    ],
    ids=["TensorBoard", "BackupAndRestore", "TerminateOnNaN", "History"],
)
def test_other_builtin_callbacks_write_and_log_as_on_a_keras_module(tmp_path, make):
    seen = {}
    for kind, module in modules().items():
        watch = _LogsRecorder()
        cbs = kb.callbacks.to_lightning([make(str(tmp_path / kind)), watch])
        quiet_trainer(cbs, max_epochs=2).fit(module, *loaders())
        seen[kind] = (
            watch.epochs,
            _layout(tmp_path / kind),
            [w.tolist() for w in kb.callbacks.host.callback_host(module).get_weights()],
        )
    (plain_logs, plain_files, plain_weights), (keras_logs, keras_files, keras_weights) = seen["plain"], seen["keras"]
    assert plain_files == keras_files
    assert [sorted(logs) for logs in plain_logs] == [sorted(logs) for logs in keras_logs] == [["loss", "val_loss"]] * 2
    for mine, theirs in zip(plain_logs, keras_logs):
        np.testing.assert_allclose([mine[k] for k in sorted(mine)], [theirs[k] for k in sorted(theirs)], rtol=1e-6)
    for mine, theirs in zip(plain_weights, keras_weights):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6)


class _EvalRecorder(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_test_begin(self, logs=None):
        self.seen.append(("test_begin", self.params["steps"]))

    def on_test_end(self, logs=None):
        self.seen.append(("test_end", dict(logs)))


class _Tested(Net):
    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("loss", torch.nn.functional.mse_loss(self.dense(x), y))


def test_validate_and_test_give_the_logged_values_to_on_test_end():
    recorder = _EvalRecorder()
    module = _Tested()
    trainer = quiet_trainer(kb.callbacks.to_lightning([recorder]))
    val = loaders()[1]
    (validated,) = trainer.validate(module, val, verbose=False)
    (tested,) = trainer.test(module, val, verbose=False)
    # what the module logged (Lightning's own results), under the names it logged; steps: 16 samples / 8
    assert recorder.seen == [("test_begin", 2), ("test_end", validated), ("test_begin", 2), ("test_end", tested)]
    assert set(validated) == {"val_loss"} and set(tested) == {"loss"}
    assert validated["val_loss"] == pytest.approx(tested["loss"])


class _LateLogger(Net):
    def on_train_epoch_end(self):
        self.log("late", 1.0)


def test_what_the_module_logs_after_the_callbacks_is_never_in_their_logs():
    recorder = _LogsRecorder()
    quiet_trainer(kb.callbacks.to_lightning([recorder]), max_epochs=2).fit(_LateLogger(), *loaders())
    # not at epoch 0 (logged after the callbacks ran), nor, a stale value, at epoch 1
    assert [sorted(logs) for logs in recorder.epochs] == [["loss", "val_loss"]] * 2
    stopper = keras.callbacks.EarlyStopping(monitor="late")
    with pytest.raises(ValueError, match=r"'late' from the epoch logs, which do not .*after the Keras callbacks ran"):
        quiet_trainer(kb.callbacks.to_lightning([stopper]), max_epochs=2).fit(_LateLogger(), *loaders())


class _EpochLossOnly(Net):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.dense(x), y)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss


def test_terminate_on_nan_without_a_batch_loss_is_refused():
    cbs = kb.callbacks.to_lightning([keras.callbacks.TerminateOnNaN()])
    match = r"TerminateOnNaN reads 'loss' from the batch logs, which do not hold it. Logged keys: none. .*on_step=True"
    with pytest.raises(ValueError, match=match):
        quiet_trainer(cbs, max_epochs=1).fit(_EpochLossOnly(), *loaders())
