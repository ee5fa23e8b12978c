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
BETWEEN = ("functional-keras_optimizer", "torch-keras_optimizer")  # as in tests/_ddp_pickling.py
LAUNCHERS = ("ddp_spawn", "ddp_notebook")


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """``{launcher: {case: {"single": ..., "launched": ...}}}``, each launcher run once, in its own subprocess."""
    cache = {}

    def run(launcher):
        if launcher not in cache:
            out = tmp_path_factory.mktemp(launcher) / "result.json"
            proc = subprocess.run([sys.executable, str(SCRIPT), str(out), launcher], cwd=out.parent,
                                  env=subprocess_env(), capture_output=True, text=True, timeout=1150)  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-3000:]
            cache[launcher] = json.loads(out.read_text())
        return cache[launcher]

    return run


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("launcher, case", [(launcher, case) for launcher in LAUNCHERS for case in CASES])
def test_pickling_launcher_gives_one_process_numbers(launched, launcher, case):
    assert_like_single(launched(launcher)[case])


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("launcher, case", [(launcher, case) for launcher in LAUNCHERS for case in BETWEEN])
def test_a_launchers_fit_between_fits_on_one_process_continues_the_optimizer(launched, launcher, case):
    # The module, trained once, is sent with its optimizer's state; the launcher's processes send theirs back.
    assert_like_single(launched(launcher)[f"between-{case}"])


def assert_like_single(runs):
    single, result = runs["single"], runs["launched"]
    assert list(result["history"]) == list(single["history"])
    for key, values in single["history"].items():
        np.testing.assert_allclose(result["history"][key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    assert len(result["weights"]) == len(single["weights"])
    for a, b in zip(single["weights"], result["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)
