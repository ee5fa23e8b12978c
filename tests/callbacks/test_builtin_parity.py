"""Hook-level parity: each Keras built-in, driven with the same logs, decides as it does in Keras.

The Keras side is the callback on a compiled Keras model; the bridge side is the same class on what
the bridge hands callbacks (the Keras model with the bridge's optimizer facade, or the torch-module
facade), after the bridge's ``mode="auto"`` resolution. No Trainer is needed.
"""

import copy
import os

import keras
import numpy as np
import pytest
import torch
from helpers import twin_models
from keras import layers

import keras_bridge as kb
from keras_bridge.callbacks.monitor import resolve_monitor_op

STATE = ("wait", "best", "stopped_epoch", "best_epoch", "cooldown_counter")


def build():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(inp))


@pytest.fixture(scope="module")
def models():
    """A compiled, built Keras model and the bridge's callback models (Keras-wrapped and torch)."""
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(8) % 3]
    k_model, b_model = twin_models(build)
    compile_kwargs = dict(loss="categorical_crossentropy", metrics=["accuracy", "mae"])
    k_model.compile(optimizer=keras.optimizers.SGD(0.1), **compile_kwargs)
    k_model.evaluate(x, y, verbose=0)  # builds the compiled metrics that mode="auto" searches
    bridges = []
    for net in (b_model, torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1))):
        module = kb.KerasModule(net)
        module.compile(optimizer=kb.optimizers.SGD(0.1), **compile_kwargs)
        module.evaluate(x, y, verbose=0)
        model = module.callback_model
        model.optimizer._last = torch.optim.SGD(module.model.parameters(), lr=0.1)
        bridges.append((module, model))
    return k_model, bridges


def set_lr(model, value):
    if isinstance(model.optimizer, kb.callbacks.OptimizerFacade):
        model.optimizer._last.param_groups[0]["lr"] = value
    else:
        model.optimizer.learning_rate = value


def drive(cb, model, script, module=None):
    """Call the hooks of ``script`` [(hook, index, logs)] and record what the callback did after each."""
    set_lr(model, 0.1)
    model.stop_training = False
    cb.set_model(model)
    cb.set_params({"verbose": 0, "epochs": 20, "steps": 3})
    if module is not None:
        resolve_monitor_op(cb, module)
    cb.on_train_begin({})
    trace = []
    for hook, index, logs in script:
        logs = dict(logs)
        getattr(cb, hook)(index, logs)
        state = {k: copy.deepcopy(getattr(cb, k)) for k in STATE if hasattr(cb, k)}
        trace.append((hook, index, logs, bool(model.stop_training), float(model.optimizer.learning_rate), state))
        if model.stop_training and hook == "on_epoch_end":
            break
    cb.on_train_end({})
    return trace


def epochs(key, values):
    script = []
    for epoch, value in enumerate(values):
        script += [("on_epoch_begin", epoch, {}), ("on_epoch_end", epoch, {"loss": 1.0, key: value})]
    return script


def assert_same(models, make, script, capsys):
    k_model, bridges = models
    expected = drive(make(), k_model, script)
    keras_out = capsys.readouterr().out
    for module, model in bridges:
        assert drive(make(), model, script, module) == expected
        assert capsys.readouterr().out == keras_out


PLATEAU = [1.0, 0.9, 0.95, 0.92, 0.93, 0.97, 0.99, 1.2]
SLOW = [1.0, 0.96, 0.93, 0.9, 0.89, 0.885, 0.88]
ACC = [0.5, 0.6, 0.6, 0.65, 0.64, 0.63, 0.62]


@pytest.mark.parametrize(
    "kwargs, key, values",
    [
        (dict(patience=0), "val_loss", PLATEAU),
        (dict(patience=2), "val_loss", PLATEAU),
        (dict(min_delta=0.05, patience=2), "val_loss", SLOW),
        (dict(min_delta=-0.05, patience=1), "val_loss", SLOW),
        (dict(baseline=0.8, patience=1), "val_loss", [1.0, 0.9, 0.85, 0.7, 0.69, 0.71, 0.72]),
        (dict(start_from_epoch=3, patience=0), "val_loss", [1, 2, 3, 4, 5, 6]),
        (dict(patience=1, verbose=1), "val_accuracy", ACC),
        (dict(patience=1, mode="max", monitor="val_mae"), "val_mae", ACC),
        (dict(patience=1, monitor="val_mae"), "val_mae", ACC),
        (dict(patience=2, monitor="loss"), "val_loss", PLATEAU),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else None,
)
def test_early_stopping(models, capsys, kwargs, key, values):
    kwargs = dict(kwargs)
    kwargs.setdefault("monitor", key)
    assert_same(models, lambda: keras.callbacks.EarlyStopping(**kwargs), epochs(key, values), capsys)


def test_early_stopping_restores_the_best_weights(models):
    k_model, bridges = models
    for module, model in [(None, k_model)] + bridges:
        cb = keras.callbacks.EarlyStopping(patience=10, restore_best_weights=True)
        cb.set_model(model)
        if module is not None:
            resolve_monitor_op(cb, module)
        cb.on_train_begin({})
        for epoch, value in enumerate([1.0, 0.5, 0.7, 0.8]):
            model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
            cb.on_epoch_end(epoch, {"val_loss": value})
        cb.on_train_end({})
        assert cb.best_epoch == 1 and cb.stopped_epoch == 0  # restored even without an early stop
        assert all(np.all(w == 1) for w in model.get_weights())


def test_mode_auto_cannot_guess_like_keras(models):
    k_model, bridges = models
    for module, model in [(None, k_model)] + bridges:
        cb = keras.callbacks.EarlyStopping(monitor="val_out_accuracy")
        cb.set_model(model)
        if module is not None:
            resolve_monitor_op(cb, module)
        with pytest.raises(ValueError, match="isn't able to automatically determine"):
            cb.on_epoch_end(0, {"val_out_accuracy": 0.5})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(patience=1, factor=0.5),
        dict(patience=2, cooldown=1, factor=0.5),
        dict(patience=1, min_lr=0.03, factor=0.5),
        dict(patience=0, cooldown=2, factor=0.2, verbose=1),
        dict(monitor="val_accuracy", patience=1),
    ],
    ids=str,
)
@pytest.mark.parametrize("values", [[1.0] * 8, PLATEAU])
def test_reduce_lr_on_plateau(models, capsys, kwargs, values):
    key = kwargs.get("monitor", "val_loss")
    assert_same(models, lambda: keras.callbacks.ReduceLROnPlateau(**kwargs), epochs(key, values), capsys)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda epoch, lr: lr * 0.5 if epoch > 1 else lr,
        lambda epoch: 0.1 / (epoch + 1),
        lambda epoch, lr: np.float32(0.01 * epoch),
    ],
)
def test_learning_rate_scheduler(models, capsys, schedule):
    make = lambda: keras.callbacks.LearningRateScheduler(schedule, verbose=1)  # noqa: E731
    assert_same(models, make, epochs("val_loss", [1.0] * 4), capsys)


def test_learning_rate_scheduler_rejects_ints_like_keras(models):
    k_model, bridges = models
    for model in [k_model] + [m for _, m in bridges]:
        cb = keras.callbacks.LearningRateScheduler(lambda epoch: 1)
        cb.set_model(model)
        with pytest.raises(ValueError, match="should be a float"):
            cb.on_epoch_begin(0, {})


def test_terminate_on_nan(models, capsys):
    script = [("on_train_batch_end", 0, {"loss": 1.0}), ("on_train_batch_end", 1, {"loss": float("inf")})]
    assert_same(models, keras.callbacks.TerminateOnNaN, script, capsys)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filepath="m_{epoch:02d}_{val_loss:.3f}.keras", save_best_only=True, verbose=1),
        dict(filepath="m_{epoch}.keras", monitor="val_accuracy", save_best_only=True),
        dict(filepath="m_{epoch}.keras", initial_value_threshold=0.92, save_best_only=True),
        dict(filepath="w_e{epoch}_b{batch}.weights.h5", save_weights_only=True, save_freq=2),
        dict(filepath="m_last.keras"),
    ],
    ids=str,
)
def test_model_checkpoint_writes_the_same_files(models, tmp_path, monkeypatch, capsys, kwargs):
    script = []
    for epoch, value in enumerate(PLATEAU[:5]):
        script.append(("on_epoch_begin", epoch, {}))
        script += [("on_train_batch_end", batch, {"loss": 1.0 + batch}) for batch in range(3)]
        script.append(("on_epoch_end", epoch, {"loss": 1.0, "val_loss": value, "val_accuracy": 1 - value}))
    k_model, bridges = models
    monkeypatch.chdir(tmp_path)
    expected = drive(keras.callbacks.ModelCheckpoint(**kwargs), k_model, script)
    keras_files, keras_out = sorted(os.listdir()), capsys.readouterr().out
    for module, model in bridges:
        for name in os.listdir():
            os.remove(name)
        assert drive(keras.callbacks.ModelCheckpoint(**kwargs), model, script, module) == expected
        assert sorted(os.listdir()) == keras_files
        assert capsys.readouterr().out == keras_out


def test_model_checkpoint_int_save_freq_with_save_best_only_does_not_crash(models, tmp_path, monkeypatch):
    # Keras 3.15 raises TypeError on the second batch save (monitor_op unset); the bridge resolves it first.
    _, [(module, model), _] = models
    monkeypatch.chdir(tmp_path)
    cb = keras.callbacks.ModelCheckpoint("b{batch}.keras", monitor="loss", save_best_only=True, save_freq=1)
    script = [("on_epoch_begin", 0, {})]
    script += [("on_train_batch_end", b, {"loss": v}) for b, v in enumerate([3.0, 2.0, 2.5, 1.0])]
    drive(cb, model, script, module)
    assert sorted(os.listdir()) == ["b1.keras", "b2.keras", "b4.keras"]
    keras_cb = keras.callbacks.ModelCheckpoint("k{batch}.keras", monitor="loss", save_best_only=True, save_freq=1)
    with pytest.raises(TypeError):
        drive(keras_cb, model, script)


def test_history_and_csv_logger_are_pure_python(models, tmp_path):
    k_model, bridges = models
    script = epochs("val_loss", [1.0, 0.5])
    contents = []
    for i, model in enumerate([k_model] + [m for _, m in bridges]):
        path = tmp_path / f"{i}.csv"
        drive(keras.callbacks.CSVLogger(str(path), separator=";"), model, script)
        contents.append(path.read_text())
    assert contents[1] == contents[2] == contents[0]
