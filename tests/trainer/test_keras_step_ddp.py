"""A Keras model's own train_step under 2-process DDP (gloo on CPU) == 1 process == plain Keras."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_ddp_keras_step.py")


def run(tmp_path, devices, *mode):
    out = tmp_path / f"out_{devices}.json"
    env = subprocess_env()
    env["PYTHONPATH"] += f":{SCRIPT.parent}"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices), *mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def assert_same(expected, got):
    assert list(got["history"]) == list(expected["history"])
    for key, values in expected["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=1e-5, atol=1e-7, err_msg=key)
    assert list(got["evaluate"]) == list(expected["evaluate"])
    np.testing.assert_allclose(list(got["evaluate"].values()), list(expected["evaluate"].values()), rtol=1e-5)
    np.testing.assert_allclose(got["predictions"], expected["predictions"], rtol=1e-5, atol=1e-7)
    for a, b in zip(expected["weights"], got["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.ddp
def test_custom_train_step_ddp_equals_one_process_and_keras(tmp_path):
    single = run(tmp_path, 1)
    ddp = run(tmp_path, 2)["bridge"]
    assert_same(single["keras"], single["bridge"])
    assert_same(single["keras"], ddp)
    assert single["bridge"]["calls"] == single["keras"]["calls"]
    # Each process runs the step once per global batch, on its half.
    assert ddp["calls"]["train_step"] == single["keras"]["calls"]["train_step"]


@pytest.mark.ddp
def test_step_logs_the_processes_cannot_combine_are_refused_at_the_first_step(tmp_path):
    result = run(tmp_path, 2, "raw-logs")
    assert "must be the results of the model's metrics" in result["error"]
    assert "Received logs with keys ['loss']" in result["error"]
    # Their keys are known once the model's own step has run: refused after it, not at the epoch's end.
    assert result["calls"]["train_step"] == 1
