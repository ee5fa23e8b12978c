"""Launchers that pickle the module for their processes (``ddp_spawn``, ``ddp_notebook`` from a script) train
torch modules, Keras functional and Keras subclassed models, each with a Keras and with a torch optimizer, and give
the 1-process numbers (tests/_ddp_pickling.py runs every case in one subprocess per launcher)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_ddp_pickling.py")
CASES = [f"{m}-{o}" for m in ("torch", "functional", "subclassed") for o in ("keras_optimizer", "torch_optimizer")]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("launcher", ["ddp_spawn", "ddp_notebook"])
def test_pickling_launcher_gives_one_process_numbers(tmp_path, launcher):
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), launcher], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=1150)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(CASES)
    for case, runs in results.items():
        single, launched = runs["single"], runs["launched"]
        assert list(launched["history"]) == list(single["history"]), case
        for key, values in single["history"].items():
            np.testing.assert_allclose(launched["history"][key], values, rtol=1e-4, atol=1e-6, err_msg=f"{case} {key}")
        assert len(launched["weights"]) == len(single["weights"]), case
        for a, b in zip(single["weights"], launched["weights"]):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6, err_msg=case)
