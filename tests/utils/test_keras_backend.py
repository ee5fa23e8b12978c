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
