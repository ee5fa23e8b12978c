"""The same fit on 2 processes (Lightning DDP, gloo on CPU) gives the 1-process numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_ddp_fit.py")


def run(tmp_path, devices):
    out = tmp_path / f"out_{devices}.json"
    env = subprocess_env()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(devices)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


@pytest.mark.ddp
def test_ddp_matches_single_process(tmp_path):
    single, _ = run(tmp_path, 1)
    ddp, proc = run(tmp_path, 2)
    assert ddp["epoch"] == single["epoch"] == [0, 1, 2]
    assert list(ddp["history"]) == list(single["history"])
    for key, values in single["history"].items():
        np.testing.assert_allclose(ddp["history"][key], values, rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(single["weights"], ddp["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    # predict returns every sample in input order, evaluate the synchronised numbers, on every process
    other = json.loads((tmp_path / "out_2.json.rank1").read_text())
    for result in (ddp, other):
        assert np.asarray(result["predictions"]).shape == np.asarray(single["predictions"]).shape == (74, 3)
        np.testing.assert_allclose(result["predictions"], single["predictions"], rtol=1e-5, atol=1e-6)
        assert sorted(result["evaluate"]) == sorted(single["evaluate"])
        for key, value in single["evaluate"].items():
            np.testing.assert_allclose(result["evaluate"][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    (tmp_path / "out_2.json.rank1").unlink()
    # a Keras user sees no Lightning banners, and fit leaves no files behind
    assert "GPU available" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out_1.json", "out_2.json"]
