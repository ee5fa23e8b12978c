"""Keras's own model tests (shared/keras-model-tests, unmodified Keras v3.15.1 sources), fit through the bridge.

They are an outside judge of the output, loss and metric structures: nested outputs with structured
losses, custom ``compute_loss``, optional inputs and the like, each trained by a user's unchanged Keras
code on ``KerasModule``. The suite runs in a subprocess with its own conftest; it is skipped where the
shared folder is not laid out beside the project.
"""

import pytest
from helpers import SHARED_DIR, run_shared_suite

SUITE = SHARED_DIR / "keras-model-tests"


@pytest.mark.slow
@pytest.mark.skipif(not SUITE.is_dir(), reason="../shared/keras-model-tests is not present")
def test_keras_model_tests_pass_through_the_bridge(tmp_path):
    passed, summary = run_shared_suite(SUITE, tmp_path)
    assert passed == 72 and "failed" not in summary and "skipped" not in summary, summary
