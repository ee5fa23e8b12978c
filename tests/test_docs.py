"""The documentation builds, with warnings as errors: the Markdown pages and the API reference from the docstrings.

This is how CI runs the docs build (``.ci/run`` runs the whole test suite). The same command by hand:
``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``docs/_build/`` is git-ignored).
"""

import subprocess
import sys

from helpers import REPO_ROOT, subprocess_env


def test_docs_build_with_warnings_as_errors(tmp_path):
    out = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)]
    run = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sphinx-build failed:\n{run.stdout}\n{run.stderr}"
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in (
        "keras_bridge.KerasModule",
        "keras_bridge.load_model",
        "keras_bridge.callbacks.to_lightning",
        "keras_bridge.data.KerasDataModule",
        "keras_bridge.optimizers.get_optimizer",
        "keras_bridge.trainer.connector.TrainerConnector",
    ):
        assert f'id="{name}"' in api, name
    mapping = (out / "keras-to-lightning.html").read_text(encoding="utf-8")
    assert "Deliberate differences from Keras 3" in mapping
