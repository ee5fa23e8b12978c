"""Smoke tests of ``examples/guide_3_*.py``: one script per section (3.6-3.11) of the Keras guide.

Each script's ``main()`` runs in the test process (imported by path) from an empty working directory,
and its results are checked against Keras's rules: History keys and lengths, the numbers Keras's own
callbacks and schedules give for the same inputs, and the files written (only under ``out_dir``).
"""

import ast
import csv
import importlib.util
import math
import os
import types

import keras
import numpy as np
import pytest
import torch
from helpers import REPO_ROOT

import keras_bridge as kb

EXAMPLES = REPO_ROOT / "examples"
GUIDE_SCRIPTS = sorted(p.name for p in EXAMPLES.glob("guide_3_*.py"))
ACC = "sparse_categorical_accuracy"
SINGLE_OUTPUT_KEYS = ["loss", ACC, "val_loss", f"val_{ACC}"]


def load_example(filename):
    """Import ``examples/<filename>`` as a fresh module (scripts are not a package)."""
    path = EXAMPLES / filename
    spec = importlib.util.spec_from_file_location(f"kb_example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def on_plain_keras(example):
    """The example with its one change from the guide undone: ``kb.KerasModule(model)`` is the Keras model
    itself, trained by ``keras.Model.fit`` (the expected numbers come from Keras, not from the bridge).
    """
    example.kb = types.SimpleNamespace(KerasModule=lambda model: model, load_model=keras.models.load_model)
    return example


def assert_same_history(actual, expected, name=""):
    assert list(actual) == list(expected), name
    for key, values in expected.items():
        np.testing.assert_allclose(actual[key], values, rtol=1e-5, atol=1e-7, err_msg=f"{name} {key}")


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    """Run from an empty folder, with one torch thread (a small MLP loses time to threads on 2 shared cores)."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield workdir
    torch.set_num_threads(threads)
    assert sorted(os.listdir(workdir)) == [], "an example wrote into the working directory"


def assert_decreasing(values, what):
    assert all(np.isfinite(values)), (what, values)
    assert values[-1] < values[0], (what, values)


def test_every_guide_section_has_a_script():
    assert GUIDE_SCRIPTS == [
        "guide_3_10_callbacks.py",
        "guide_3_11_lr_schedules.py",
        "guide_3_6_pydataset.py",
        "guide_3_7_dataloader.py",
        "guide_3_8_weights.py",
        "guide_3_9_multi_io.py",
    ]


@pytest.mark.parametrize("filename", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_imports_keras_bridge_before_keras(filename):
    """Without KERAS_BACKEND=torch, importing keras first fails inside Keras ("No module named 'tensorflow'")."""
    tree = ast.parse((EXAMPLES / filename).read_text())
    imported = [
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [None])
    ]
    first_keras = next(i for i, name in enumerate(imported) if name.split(".")[0] in ("keras", "keras_bridge"))
    assert imported[first_keras] == "keras_bridge", imported


@pytest.mark.slow
def test_3_6_pydataset_workers_threads_and_processes_give_the_same_history():
    results = load_example("guide_3_6_pydataset.py").main(epochs=2)
    default = results["default"]
    for name, result in results.items():
        history = result["history"]
        assert list(history) == sorted(SINGLE_OUTPUT_KEYS), name
        assert all(len(v) == 2 for v in history.values()), name
        assert_decreasing(history["loss"], name)
        # evaluate(val_py_dataset) after fit sees the weights of the last validation pass.
        np.testing.assert_allclose(result["evaluate"], [history["val_loss"][-1], history[f"val_{ACC}"][-1]], rtol=1e-6)
        # Keras calls on_epoch_end() once when fit starts and after every epoch.
        assert result["train_epochs_ended"] == 2 + 1, name
        # Threads and worker processes deliver the same batches in the same order as inline reads.
        for key, values in history.items():
            np.testing.assert_allclose(values, default["history"][key], rtol=1e-6, err_msg=f"{name}: {key}")


def test_3_7_dataloader_fit_evaluate_and_dataset():
    result = load_example("guide_3_7_dataloader.py").main(epochs=2)
    history = result["history"]
    assert list(history) == sorted(SINGLE_OUTPUT_KEYS)
    assert all(len(v) == 2 for v in history.values())
    assert_decreasing(history["loss"], "loss")
    # The validation loader shuffles, but loss and accuracy are means over the same samples.
    np.testing.assert_allclose(result["evaluate"], [history["val_loss"][-1], history[f"val_{ACC}"][-1]], rtol=1e-5)
    assert result["steps"] == math.ceil(1500 / 32)
    dataset_history = result["dataset_history"]
    assert list(dataset_history) == sorted(SINGLE_OUTPUT_KEYS)
    assert_decreasing(dataset_history["loss"], "dataset loss")


def test_3_8_class_weight_equals_sample_weight_and_loss_is_sum_of_weighted_over_n():
    result = load_example("guide_3_8_weights.py").main(epochs=2)
    for name in ("class_weight", "sample_weight", "dataset"):
        history = result[name]
        assert list(history) == ["loss", ACC], name
        assert len(history["loss"]) == 2, name
        assert_decreasing(history["loss"], name)
    # class_weight={5: 2.0, others 1.0} gives every sample the weight the guide's sample_weight array gives it.
    for key in ("loss", ACC):
        np.testing.assert_allclose(result["class_weight"][key], result["sample_weight"][key], rtol=1e-6)
    # Keras's weighted loss: sum(w * loss) / N (not / sum(w)); `metrics=` ignore the weights.
    y, w, probs = result["y"], result["sample_weights"], result["predictions"]
    per_sample = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1 - 1e-7))
    loss, accuracy = result["weighted_evaluate"]
    np.testing.assert_allclose(loss, np.mean(w * per_sample), rtol=1e-4)
    assert not np.isclose(loss, np.sum(w * per_sample) / np.sum(w), rtol=1e-3)
    np.testing.assert_allclose(accuracy, np.mean(np.argmax(probs, axis=1) == y), rtol=1e-6)


def test_3_9_multi_input_multi_output():
    result = load_example("guide_3_9_multi_io.py").main(epochs=2)
    histories = result["histories"]
    assert list(histories["list_metrics"]) == [
        "class_output_categorical_accuracy",
        "class_output_loss",
        "loss",
        "score_output_loss",
        "score_output_mean_absolute_error",
        "score_output_mean_absolute_percentage_error",
    ]
    assert list(histories["dict_loss_weights"]) == list(histories["list_metrics"])
    for name, history in histories.items():
        assert all(len(v) == 2 for v in history.values()), name
        assert all(np.isfinite(v).all() for v in history.values()), name
    # The total is the weighted sum of the per-output losses, which are logged unweighted (Keras 3.7+).
    h = histories["dict_loss_weights"]
    np.testing.assert_allclose(h["loss"], 2.0 * np.array(h["score_output_loss"]) + h["class_output_loss"], rtol=1e-5)
    h = histories["list_metrics"]
    np.testing.assert_allclose(h["loss"], np.array(h["score_output_loss"]) + h["class_output_loss"], rtol=1e-5)
    # An output without a loss: a None list entry and a dict without the key mean the same.
    assert list(histories["list_none_loss"]) == ["loss"]
    np.testing.assert_allclose(histories["dict_partial_loss"]["loss"], histories["list_none_loss"]["loss"], rtol=1e-6)
    # Lists and dicts of arrays are the same data.
    assert list(histories["fit_lists"]) == ["class_output_loss", "loss", "score_output_loss"]
    for key, values in histories["fit_lists"].items():
        np.testing.assert_allclose(histories["fit_dicts"][key], values, rtol=1e-6, err_msg=key)
    assert list(histories["fit_dataset"]) == list(histories["fit_lists"])
    assert result["prediction_shapes"] == [(100, 1), (100, 5)]


def _replay_early_stopping(val_losses):
    """Feed the val_loss sequence to a real Keras EarlyStopping (the guide's settings); epochs it lets run."""
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-2, patience=2)
    stopper.set_model(types.SimpleNamespace(stop_training=False))
    stopper.on_train_begin()
    for epoch, value in enumerate(val_losses):
        stopper.on_epoch_end(epoch, {"val_loss": value})
        if stopper.model.stop_training:
            return epoch + 1, stopper.stopped_epoch
    return len(val_losses), 0


def _tensorboard_scalars(folder):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if tag != "keras"
    }


@pytest.mark.slow
def test_3_10_callbacks_files_and_restores(tmp_path):
    out_dir = tmp_path / "out"
    result = load_example("guide_3_10_callbacks.py").main(out_dir=str(out_dir))

    # EarlyStopping stops where Keras's own EarlyStopping stops on the same val_loss sequence.
    es = result["early_stopping"]
    history = es["history"]
    assert list(history) == sorted(SINGLE_OUTPUT_KEYS)
    epochs_run, stopped_epoch = _replay_early_stopping(history["val_loss"])
    assert len(history["loss"]) == epochs_run
    assert es["stopped_epoch"] == stopped_epoch

    # The guide's LossHistory: one running-mean loss per batch; the last one is the epoch's loss.
    losses = result["loss_history"]["per_batch_losses"]
    assert len(losses) == math.ceil(1500 / 64)
    assert losses[-1] == pytest.approx(result["loss_history"]["history"]["loss"][0], rel=1e-6)

    # ModelCheckpoint(save_best_only=True): one file per epoch that improved val_loss ({epoch} is 1-based).
    history = result["checkpoint"]["history"]
    improved = [e + 1 for e, v in enumerate(history["val_loss"]) if v < min(history["val_loss"][:e], default=np.inf)]
    assert sorted(p.name for p in out_dir.glob("mymodel_*.keras")) == [f"mymodel_{e}.keras" for e in improved]
    best = out_dir / f"mymodel_{improved[-1]}.keras"
    if improved[-1] == len(history["val_loss"]):  # the last epoch was the best: the file holds the final weights
        x = load_example("guide_3_10_callbacks.py").load_data()[0][:50]
        expected = result["checkpoint"]["model"].predict(x, verbose=0)
        np.testing.assert_allclose(keras.models.load_model(best).predict(x, verbose=0), expected, rtol=1e-5)
        np.testing.assert_allclose(kb.load_model(best).predict(x, verbose=0), expected, rtol=1e-5)

    # TensorBoard (no TensorFlow installed): Keras's train/ and validation/ runs with the epoch values.
    train = _tensorboard_scalars(out_dir / "logs" / "train")
    validation = _tensorboard_scalars(out_dir / "logs" / "validation")
    np.testing.assert_allclose(train["epoch_loss"], history["loss"], rtol=1e-6)
    np.testing.assert_allclose(validation["epoch_loss"], history["val_loss"], rtol=1e-6)
    assert len(train["epoch_learning_rate"]) == 2

    # CSVLogger: 0-based epochs, sorted columns, the History values.
    with open(out_dir / "training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", *sorted(SINGLE_OUTPUT_KEYS)]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    np.testing.assert_allclose([float(r["val_loss"]) for r in rows], history["val_loss"], rtol=1e-6)

    # Fault tolerance: the second run restored the first run's newest checkpoint and kept training from it.
    checkpoints = sorted(out_dir.glob("ckpt/model-loss=*.keras"))
    assert len(checkpoints) >= 2
    assert os.path.dirname(result["restored_from"]) == str(out_dir / "ckpt")
    first, second = result["fault_tolerance"]["runs"]
    assert second["loss"][0] < first["loss"][0]
    assert isinstance(result["fault_tolerance"]["restored_model"], kb.KerasModule)
    newest = max(checkpoints, key=os.path.getctime)
    x = np.random.default_rng(0).random((8, 64)).astype("float32")
    np.testing.assert_allclose(
        keras.models.load_model(newest).predict(x, verbose=0), kb.load_model(newest).predict(x, verbose=0), rtol=1e-6
    )

    # BackupAndRestore: the interrupted fit resumes at the epoch it reached, with Keras's numbers. Keras restores
    # weights, optimizer and epoch but not the shuffle's random stream: its resumed epochs differ from an
    # uninterrupted fit's (here loss [0.848972, 0.582489] vs [0.859638, 0.582850]), and so do the bridge's.
    backup = result["backup"]
    assert backup["epoch"] == [2, 3]
    assert not os.path.exists(backup["backup_dir"])  # deleted when the fit completes
    example = on_plain_keras(load_example("guide_3_10_callbacks.py"))
    keras_backup = example.backup_and_restore(str(tmp_path / "keras"), *example.load_data())
    assert keras_backup["epoch"] == backup["epoch"]
    assert_same_history(backup["history"], keras_backup["history"], "resumed")
    assert_same_history(backup["uninterrupted"], keras_backup["uninterrupted"], "uninterrupted")


def _replay_reduce_lr(val_losses, initial_lr):
    """The learning rates a real Keras ReduceLROnPlateau (the example's settings) logs for this val_loss sequence."""
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
    reduce_lr.set_model(types.SimpleNamespace(optimizer=types.SimpleNamespace(learning_rate=initial_lr)))
    reduce_lr.on_train_begin()
    logged = []
    for epoch, value in enumerate(val_losses):
        logs = {"val_loss": value}
        reduce_lr.on_epoch_end(epoch, logs)
        logged.append(logs["learning_rate"])
    return logged


def test_3_11_schedules_are_evaluated_per_step_and_reduce_lr_on_plateau():
    result = load_example("guide_3_11_lr_schedules.py").main(epochs=2)
    assert result["guide_schedule_config"]["decay_steps"] == 100000
    steps_per_epoch = math.ceil(1500 / 64)
    for name in ("ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay", "InverseTimeDecay"):
        run = result[name]
        # One optimizer step per batch, counted from 0 and never reset between epochs.
        assert run["steps"] == list(range(2 * steps_per_epoch)), name
        # Update k uses schedule(k), computed here by the Keras schedule object itself.
        expected = [float(keras.ops.convert_to_numpy(run["schedule"](step))) for step in run["steps"]]
        np.testing.assert_allclose(run["learning_rates"], expected, rtol=1e-6, err_msg=name)
        assert len(set(np.round(run["learning_rates"], 10))) > 1, name  # the rate did change
        assert_decreasing(run["history"]["loss"], name)

    # The same runs on plain Keras (same seeds, same shuffles): every History equal.
    keras_result = on_plain_keras(load_example("guide_3_11_lr_schedules.py")).main(epochs=2)
    for name in ("ExponentialDecay", "PiecewiseConstantDecay", "PolynomialDecay", "InverseTimeDecay"):
        assert_same_history(result[name]["history"], keras_result[name]["history"], name)
        np.testing.assert_allclose(result[name]["learning_rates"], keras_result[name]["learning_rates"], rtol=1e-6)

    history = result["ReduceLROnPlateau"]["history"]
    # Keras's logs are sorted, then the callback appends the rate it trained the epoch with.
    assert list(history) == [*sorted(SINGLE_OUTPUT_KEYS), "learning_rate"]
    assert_same_history(history, keras_result["ReduceLROnPlateau"]["history"], "ReduceLROnPlateau")
    expected = _replay_reduce_lr(history["val_loss"], 1e-2)
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-6)
    # val_loss rose after epoch 5 (0.1109 -> 0.3359, on Keras too): the rate was halved at the end of the fit.
    rates = [_learning_rate(r["ReduceLROnPlateau"]["callback"]) for r in (result, keras_result)]
    assert rates[0] == pytest.approx(rates[1]) == pytest.approx(5e-3)


def _learning_rate(callback):
    return float(keras.ops.convert_to_numpy(callback.model.optimizer.learning_rate))
