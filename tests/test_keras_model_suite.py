"""Keras's own model tests (shared/keras-model-tests, unmodified Keras v3.15.1 sources), fit through the bridge.

They are an outside judge of the output, loss and metric structures: nested outputs with structured
losses, custom ``compute_loss``, optional inputs and the like, each trained by a user's unchanged Keras
code on ``KerasModule``. The suite runs in a subprocess with its own conftest; it is skipped where the
shared folder is not laid out beside the project.
"""

import pathlib
import re
import subprocess
import sys

import pytest

SUITE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "keras-model-tests"


@pytest.mark.slow
@pytest.mark.skipif(not SUITE.is_dir(), reason="../shared/keras-model-tests is not present")
def test_keras_model_tests_pass_through_the_bridge(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
         "--rootdir", str(SUITE), str(SUITE)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed == 72 and "failed" not in summary and "skipped" not in summary, summary
