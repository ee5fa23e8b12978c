"""Files the bridge writes for a Keras model are Keras's own files: loaded by plain Keras in a fresh process they
evaluate and keep training exactly as the bridge does (compile config and optimizer state included)."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import load_digits_data, subprocess_env

import keras_bridge as kb

SCRIPT = """
import json, sys
import numpy as np
import keras
x = np.load(sys.argv[2]); y = np.load(sys.argv[3])
model = keras.models.load_model(sys.argv[1])
out = {"optimizer": type(model.optimizer).__name__, "iterations": int(model.optimizer.iterations.numpy()),
       "evaluate": model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)}
model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
out["iterations_after"] = int(model.optimizer.iterations.numpy())
np.savez(sys.argv[4], *model.get_weights())
print(json.dumps(out))
"""


def _build():
    inputs = keras.Input((64,), name="digits")
    hidden = keras.layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="predictions")(hidden))


@pytest.mark.slow
def test_keras_model_checkpoint_continues_in_plain_keras_in_a_fresh_process(tmp_path):
    x, y = load_digits_data()
    x, y = x[:640], y[:640]
    keras.utils.set_random_seed(7)
    module = kb.KerasModule(_build())
    module.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "m_{epoch}.keras"))
    module.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0, callbacks=[checkpoint])
    bridge_eval = module.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)

    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    script = tmp_path / "continue.py"
    script.write_text(SCRIPT)
    args = [str(tmp_path / n) for n in ("m_2.keras", "x.npy", "y.npy", "keras_weights.npz")]
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                         env=subprocess_env(KERAS_BACKEND="torch"), cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    keras_side = json.loads(run.stdout.strip().splitlines()[-1])

    # Loaded compiled, with the trained optimizer state: 2 epochs of 10 steps.
    assert keras_side["optimizer"] == "Adam" and keras_side["iterations"] == 20
    for key, value in bridge_eval.items():
        np.testing.assert_allclose(keras_side["evaluate"][key], value, rtol=1e-6, err_msg=key)

    module.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    assert keras_side["iterations_after"] == int(module.model.optimizer.iterations.numpy()) == 30
    keras_weights = np.load(tmp_path / "keras_weights.npz")
    for i, bridge_weight in enumerate(module.get_weights()):
        np.testing.assert_allclose(bridge_weight, keras_weights[f"arr_{i}"], rtol=1e-5, atol=1e-7)


def test_after_a_bridge_fit_plain_keras_evaluates_predicts_and_fits_the_model():
    x, y = load_digits_data()
    x, y = x[:256], y[:256]
    model = _build()
    module = kb.KerasModule(model)
    module.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    module.fit(x, y, batch_size=64, epochs=1, verbose=0)
    bridge = module.evaluate(x, y, batch_size=64, verbose=0)
    # The user's model object itself, with plain Keras: compiled as the user compiled it.
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=64, verbose=0), bridge, rtol=1e-6)
    np.testing.assert_allclose(model.predict(x[:8], verbose=0), module.predict(x[:8], verbose=0), rtol=1e-6)
    iterations = int(model.optimizer.iterations.numpy())
    assert iterations == 4
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 8


def test_keras_model_methods_on_the_module(tmp_path, capsys):
    model = _build()
    module = kb.KerasModule(model)
    module.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    weights = module.get_weights()
    assert [w.shape for w in weights] == [(64, 32), (32,), (32, 10), (10,)]
    module.set_weights([np.full_like(w, 0.5) for w in weights])
    assert all(np.all(w == 0.5) for w in model.get_weights())
    module.save_weights(tmp_path / "a.weights.h5")
    module.set_weights(weights)
    module.load_weights(tmp_path / "a.weights.h5")
    assert all(np.all(w == 0.5) for w in module.get_weights())
    module.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert restored.count_params() == 64 * 32 + 32 + 32 * 10 + 10
    module.summary()
    assert "Total params: 2,410" in capsys.readouterr().out
