"""Keras's own callback tests (shared/keras-tests, unmodified Keras v3.15.1 sources) with fit routed through the bridge.

They are an outside judge: each runs a user's unchanged Keras code on ``KerasModule``. The suite is run in a
subprocess with its own conftest; it is skipped where the shared folder is not laid out beside the project.
"""

import pytest
from helpers import SHARED_DIR, run_shared_suite

SUITE = SHARED_DIR / "keras-tests"


@pytest.mark.slow
@pytest.mark.skipif(not SUITE.is_dir(), reason="../shared/keras-tests is not present")
def test_keras_callback_tests_pass_through_the_bridge(tmp_path):
    passed, summary = run_shared_suite(SUITE, tmp_path)
    assert passed >= 50 and "failed" not in summary, summary
