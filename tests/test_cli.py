"""examples/cli: a LightningCLI run from one YAML file equals the same run through KerasModule.fit (issue 12).

The CLI runs in-process (``LightningCLI(args=...)``, as ``python examples/cli/train.py fit --config
run.yaml`` does); one test also runs the script itself in a subprocess (slow).
"""

import csv
import importlib.util
import subprocess
import sys

import keras
import lightning as L
import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT, subprocess_env

import keras_bridge as kb

EXAMPLE = REPO_ROOT / "examples" / "cli"
RUN_YAML = EXAMPLE / "run.yaml"


@pytest.fixture
def cli_main(monkeypatch):
    """``examples/cli/train.py``'s ``main``, imported from the file."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    spec = importlib.util.spec_from_file_location("kb_example_cli_train", EXAMPLE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same_run_through_fit(config, csv_path):
    """What run.yaml describes, written as Keras-style code: KerasModule(...).compile(...).fit(...)."""
    import digits  # examples/cli/digits.py (on sys.path through the fixture)

    model_args, data_args = config["model"], config["data"]
    L.seed_everything(config["seed_everything"])
    model = digits.DigitsMLP(**model_args["model"]["init_args"])  # LightningCLI builds the model first
    data = digits.DigitsData(**data_args)
    module = kb.KerasModule(model)
    module.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=0.001),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="crossentropy", from_logits=True)],
    )
    # The DataModule shuffles with the bridge's independent seeded shuffle (its seed drawn from torch's RNG);
    # given that seed, fit shuffles the same way instead of Keras's way: the same seed makes the same batches.
    module.next_shuffle_seed = lambda: data.seed
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(csv_path)),
    ]
    x, y = digits.load_arrays()
    return module.fit(x, y, batch_size=data_args["batch_size"], epochs=config["trainer"]["max_epochs"],
                      validation_split=data_args["validation_split"], shuffle=data_args["shuffle"],
                      callbacks=callbacks, verbose=0)  # fmt: skip


def test_the_cli_example_trains_from_its_yaml_as_keras_module_fit_does(tmp_path, monkeypatch, cli_main):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(RUN_YAML.read_text())
    cli = cli_main(["fit", "--config", str(RUN_YAML)])
    cli_history = cli.model.history.history
    fit_history = _same_run_through_fit(config, tmp_path / "fit.csv").history
    assert list(cli_history) == list(fit_history)
    assert {"loss", "accuracy", "crossentropy", "val_loss", "val_accuracy", "val_crossentropy"} == set(fit_history)
    for key, values in fit_history.items():
        np.testing.assert_allclose(cli_history[key], values, rtol=1e-5, err_msg=key)
    # Keras's CSVLogger files (from the YAML's callback config, and from the objects) hold the same numbers.
    cli_rows, fit_rows = _csv(tmp_path / "cli_output" / "history.csv"), _csv(tmp_path / "fit.csv")
    assert list(cli_rows[0]) == list(fit_rows[0]) == ["epoch", *sorted(fit_history)]
    np.testing.assert_allclose([[float(v) for v in r.values()] for r in cli_rows],
                               [[float(v) for v in r.values()] for r in fit_rows], rtol=1e-5)  # fmt: skip
    # Lightning's CSVLogger from the YAML: Keras's names, batch logs (log_every_n_steps), hyperparameters once.
    version = tmp_path / "cli_output" / "logs" / "digits" / "version_0"
    columns = set(_csv(version / "metrics.csv")[0])
    assert columns == {*fit_history, *(f"batch_{k}" for k in fit_history if not k.startswith("val_")), "epoch", "step"}
    hparams = yaml.safe_load((version / "hparams.yaml").read_text())
    assert hparams["optimizer"]["class_name"] == "RMSprop" and hparams["batch_size"] == 64 and hparams["epochs"] == 4


def test_print_config_round_trips(tmp_path, monkeypatch, capsys, cli_main):
    monkeypatch.chdir(tmp_path)
    printed = []
    for config in (RUN_YAML, tmp_path / "printed.yaml"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (None, 0)
        printed.append(capsys.readouterr().out)
        (tmp_path / "printed.yaml").write_text(printed[-1])
    assert printed[0] == printed[1]
    full = yaml.safe_load(printed[0])
    assert full["model"]["optimizer"] == {"class_name": "RMSprop", "config": {"learning_rate": 0.001}}
    assert full["model"]["model"]["class_path"] == "digits.DigitsMLP"
    callbacks = full["trainer"]["callbacks"][0]
    assert callbacks["class_path"] == "keras_bridge.callbacks.KerasCallbacks"
    assert [c["class_name"] for c in callbacks["init_args"]["callbacks"]] == ["EarlyStopping", "CSVLogger"]


def test_a_bad_config_in_the_yaml_names_the_key(tmp_path, monkeypatch, cli_main):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"unknown key 'confg'\. A Keras config has the keys 'class_name', 'config'"):
        cli_main(["fit", "--config", str(RUN_YAML), "--model.optimizer", '{"class_name": "RMSprop", "confg": {}}'])


@pytest.mark.slow
def test_the_cli_script_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "fit", "--config", str(RUN_YAML), "--trainer.max_epochs=2"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Epoch 2/2" in result.stdout  # Keras's progress bar (progress_bar: true)
    # Every file under the output directory the script names first, nothing in the working directory.
    out = tmp_path / "cli_output"
    assert result.stdout.splitlines()[0] == f"Writing the run's files (history.csv, logs/) under {out}"
    assert [row["epoch"] for row in _csv(out / "history.csv")] == ["0", "1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli_output"]
