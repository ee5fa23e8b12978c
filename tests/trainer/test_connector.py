"""TrainerConnector: a user's own ``lightning.Trainer`` gets the Keras-owned options for one call, then is restored.

The reference numbers come from the same call without a Trainer (``trainer=None``), which the parity
tests check against ``keras.Model.fit`` itself.
"""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import keras_bridge as kb
from keras_bridge.trainer.connector import TrainerConnector

OPTIONS = (
    "max_epochs",
    "limit_train_batches",
    "limit_val_batches",
    "limit_predict_batches",
    "check_val_every_n_epoch",
    "should_stop",
)


def _module() -> kb.KerasModule:
    torch.manual_seed(0)
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)))
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return module


def _user_trainer() -> pl.Trainer:
    # Settings a Lightning user might have chosen, all of which a Keras argument overrides.
    return pl.Trainer(
        max_epochs=7,
        limit_train_batches=2,
        limit_val_batches=1,
        limit_predict_batches=1,
        check_val_every_n_epoch=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _state(trainer: pl.Trainer):
    return {name: getattr(trainer, name) for name in OPTIONS}, list(trainer.callbacks)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 4)).astype("float32"), rng.integers(0, 3, 40)


@pytest.mark.parametrize("steps_per_epoch", [None, 2])
def test_user_trainer_fit_equals_the_bridge_trainer_and_is_restored(data, steps_per_epoch):
    x, y = data
    trainer = _user_trainer()
    before = _state(trainer)
    kwargs = dict(
        batch_size=8, epochs=3, validation_split=0.25, validation_freq=2, verbose=0, steps_per_epoch=steps_per_epoch
    )
    borrowed = _module().fit(x, y, trainer=trainer, **kwargs).history
    reference = _module().fit(x, y, **kwargs).history
    assert borrowed == reference
    assert len(borrowed["loss"]) == 3 and len(borrowed["val_loss"]) == 1  # validation after epoch 2 only
    assert _state(trainer) == before


def test_user_trainer_evaluate_and_predict_take_steps_and_are_restored(data):
    x, y = data
    module, trainer = _module(), _user_trainer()
    before = _state(trainer)
    expected = module.evaluate(x, y, batch_size=8, steps=3, verbose=0)
    assert module.evaluate(x, y, batch_size=8, steps=3, verbose=0, trainer=trainer) == expected
    by_hand = module.evaluate(x[:24], y[:24], batch_size=8, verbose=0)  # 3 steps of 8 samples
    np.testing.assert_allclose(expected, by_hand, rtol=1e-6)
    predictions = module.predict(x, batch_size=8, steps=3, verbose=0, trainer=trainer)
    np.testing.assert_allclose(predictions, module.predict(x[:24], batch_size=8, verbose=0), rtol=1e-6)
    assert _state(trainer) == before


def test_user_trainer_is_reusable_after_an_early_stop(data):
    x, y = data
    import keras

    module, trainer = _module(), _user_trainer()
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    first = module.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[stop], trainer=trainer)
    assert len(first.history["loss"]) == 2  # no improvement of 10 after epoch 1: stopped after epoch 2
    assert trainer.should_stop is False  # given back as it was
    second = module.fit(x, y, batch_size=8, epochs=2, verbose=0, trainer=trainer)
    assert len(second.history["loss"]) == 2


def test_user_trainer_is_restored_when_the_call_fails(data):
    x, y = data
    trainer = _user_trainer()
    before = _state(trainer)

    class Boom(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _module().fit(x, y, epochs=4, verbose=0, callbacks=[Boom()], trainer=trainer)
    assert _state(trainer) == before


@pytest.mark.parametrize(
    "options, owned, match",
    [
        ({"max_epochs": 5}, {"max_epochs": 2}, "max_epochs=5 conflicts with the Keras argument `epochs`"),
        ({"limit_val_batches": 3}, {"limit_val_batches": 2}, "`steps`"),
    ],
)
def test_dict_option_that_contradicts_a_keras_argument_is_refused(options, owned, match):
    with pytest.raises(ValueError, match=match):
        TrainerConnector(options, [], owned)


def test_trainer_of_another_type_is_refused():
    with pytest.raises(TypeError, match="Received: trainer of type str"):
        TrainerConnector("ddp", [], {})


def test_new_trainer_is_quiet_and_does_not_reshard_our_loaders():
    with TrainerConnector({"max_steps": 3}, [], {"max_epochs": 2}) as trainer:
        assert trainer.max_epochs == 2 and trainer.max_steps == 3
        assert trainer.logger is None and trainer.checkpoint_callback is None
        assert trainer.progress_bar_callback is None


DDP_FIT = (
    "import numpy as np, torch, keras_bridge as kb\n"
    "m = kb.KerasModule(torch.nn.Linear(3, 1)); m.compile(optimizer='sgd', loss='mse')\n"
    "m.fit(np.zeros((8, 3), 'float32'), np.zeros((8, 1), 'float32'), verbose=0,\n"
    "      trainer={'accelerator': 'cpu', 'devices': 2, 'strategy': 'ddp'})\n"
)
# A notebook kernel: sys.argv[0] is a real file (its launcher), the code runs in a __main__ without __file__.
NOTEBOOK_LIKE = "import __main__; del __main__.__file__; exec(compile(CODE, '<cell>', 'exec'), vars(__main__))\n"


@pytest.mark.parametrize(
    "how, named",
    [("python -c", "started from `python -c`"), ("stdin", "an interactive session, standard input"),
     ("notebook-like exec", "a __main__ without __file__")],
)  # fmt: skip
def test_ddp_from_code_that_cannot_rerun_fails_before_training_naming_the_cause_and_the_fix(tmp_path, how, named):
    import subprocess
    import sys

    from helpers import subprocess_env

    workdir = tmp_path / "work"
    workdir.mkdir()
    command, stdin = [sys.executable, "-c", DDP_FIT], None
    if how == "stdin":
        command, stdin = [sys.executable, "-"], DDP_FIT
    elif how == "notebook-like exec":
        launcher = tmp_path / "kernel_launcher.py"
        launcher.write_text(f"CODE = {DDP_FIT!r}\n{NOTEBOOK_LIKE}")
        command = [sys.executable, str(launcher)]
    done = subprocess.run(command, input=stdin, cwd=workdir, env=subprocess_env(), capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])  # an error, not a kill (137)
    assert named in done.stderr and "strategy='ddp_spawn'" in done.stderr and "ddp_notebook" in done.stderr
    assert "script file" in done.stderr
    assert list(workdir.iterdir()) == []  # no child process ever started
