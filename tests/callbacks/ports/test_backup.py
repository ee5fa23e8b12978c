"""BackupAndRestore: Keras's files and rules, and a resume after SIGKILL that equals an unbroken run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch
from helpers import subprocess_env, twin_models
from keras import layers

import keras_bridge as kb

SCRIPT = Path(__file__).with_name("_backup_run.py")


def run_script(cwd, backup, out, kill):
    env = subprocess_env()
    return subprocess.run(
        [sys.executable, str(SCRIPT), backup, out, "1" if kill else "0"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_unbroken_run(tmp_path):
    killed = run_script(tmp_path, "backup", "resumed.npz", kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "backup")) == ["latest.weights.h5", "training_metadata.json"]
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text()) == {"epoch": 3, "batch": 0}
    resumed = run_script(tmp_path, "backup", "resumed.npz", kill=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    unbroken = run_script(tmp_path, "backup2", "unbroken.npz", kill=False)
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "unbroken.npz")
    assert a["epoch"].tolist() == [3, 4, 5] and b["epoch"].tolist() == [0, 1, 2, 3, 4, 5]
    for key in a.files:
        if key != "epoch":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-7)
    assert sorted(os.listdir(tmp_path)) == ["resumed.npz", "unbroken.npz"]  # backups deleted after a completed fit


def build():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, layers.Dense(2, name="out")(inp))


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(save_freq=2), dict(double_checkpoint=True), dict(delete_checkpoint=False, save_freq=4)],
    ids=str,
)
def test_writes_the_files_keras_writes(tmp_path, kwargs):
    k_model, b_model = twin_models(build)
    k_model.compile(optimizer="sgd", loss="mse")
    module = kb.KerasModule(b_model)
    module.compile(optimizer="sgd", loss="mse")
    listings = []
    for name, cb, model in (
        ("keras", keras.callbacks.BackupAndRestore(str(tmp_path / "keras"), **kwargs), k_model),
        ("bridge", kb.callbacks.BackupAndRestore(str(tmp_path / "bridge"), **kwargs), module.callback_model),
    ):
        cb._kb_bind(None, module) if name == "bridge" else None
        cb.set_model(model)
        seen = []
        for epoch in range(3):
            cb.on_epoch_begin(epoch, {})
            for batch in range(3):
                cb.on_train_batch_end(batch, {"loss": 1.0})
            cb.on_epoch_end(epoch, {"loss": 1.0})
            folder = tmp_path / name
            metadata = folder / "training_metadata.json"
            seen.append(
                (
                    sorted(os.listdir(folder)) if folder.exists() else None,
                    metadata.read_text() if metadata.exists() else None,
                )
            )
        cb.on_train_end({})
        seen.append(os.path.exists(tmp_path / name))
        listings.append(seen)
    assert listings[1] == listings[0]


def test_falls_back_to_the_previous_backup_when_the_latest_is_unreadable(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    module = kb.KerasModule(torch.nn.Linear(4, 2))
    module.compile(optimizer="sgd", loss="mse")
    backup = str(tmp_path / "b")
    make = lambda: keras.callbacks.BackupAndRestore(backup, double_checkpoint=True, delete_checkpoint=False)  # noqa
    module.fit(x, y, epochs=2, verbose=0, callbacks=[make()])
    (tmp_path / "b" / "latest.weights.h5").write_bytes(b"truncated")
    callback = make()
    history = module.fit(x, y, epochs=4, verbose=0, callbacks=[callback])
    assert history.epoch == [1, 2, 3]  # the .bkp backup was taken after epoch 1
    assert callback._current_epoch == 4  # the user's Keras object holds the state, as in Keras
