"""keras_bridge selects keras's torch backend itself, and says clearly when it cannot."""

import os
import subprocess
import sys

import pytest


def run(code, backend=None):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_selects_torch_backend():
    proc = run("import keras_bridge, keras; print(keras.backend.backend())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch"


# No other keras backend can be installed here (jax/tensorflow are absent), so "keras already
# imported with jax" is a stand-in module object reporting that backend.
ALREADY_IMPORTED = (
    "import sys, types; fake = types.ModuleType('keras');"
    "fake.backend = types.SimpleNamespace(backend=lambda: 'jax'); sys.modules['keras'] = fake;"
    "import keras_bridge"
)


@pytest.mark.parametrize(
    "code, backend, named",
    [(ALREADY_IMPORTED, None, "'jax'"), ("import keras_bridge", "jax", "'jax'")],
    ids=["keras-imported-first", "env-var-names-other-backend"],
)
def test_other_backend_is_a_clear_error(code, backend, named):
    proc = run(code, backend=backend)
    assert proc.returncode != 0
    assert "KerasBackendError" in proc.stderr
    assert named in proc.stderr and "KERAS_BACKEND=torch" in proc.stderr


FLOATX = (
    "import sys, keras_bridge; from keras_bridge.utils.keras import keras_floatx; before = keras_floatx();"
    "loaded = 'keras' in sys.modules; import keras; print(before, loaded, keras.config.floatx())"
)


@pytest.mark.parametrize("config", [None, '{"floatx": "float64"}', "not json"])
def test_floatx_before_keras_is_what_keras_reads(tmp_path, config):
    """The bridge reads floatx from Keras's config file while keras is not loaded, as Keras does at import."""
    if config is not None:
        (tmp_path / "keras.json").write_text(config)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", FLOATX], capture_output=True, text=True, env=dict(env, KERAS_HOME=str(tmp_path)),
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    before, loaded, keras_value = proc.stdout.split()
    assert loaded == "False"
    assert before == keras_value
