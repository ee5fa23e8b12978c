"""Data larger than memory: a read-only ``np.memmap`` three times a memory limit trains, with the in-memory numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_memmap_fit.py")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_memmap_three_times_a_memory_limit_trains_as_in_memory(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=360)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["data_bytes"] >= 3 * report["limit_headroom"]
    limited, in_memory = report["limited"], report["memory"]
    # The data is never copied into private memory (the limit would refuse it): the growth is the model's.
    assert limited["anon_growth"] < report["limit_headroom"] / 4, limited["anon_growth"]
    # torch's "The given NumPy array is not writable" warning does not reach the user.
    assert limited["warnings"] == [] and in_memory["warnings"] == []
    assert list(limited["history"]) == list(in_memory["history"]) == ["loss", "mae"]
    for key, values in in_memory["history"].items():
        np.testing.assert_allclose(limited["history"][key], values, rtol=1e-6, err_msg=key)
    for a, b in zip(limited["weights"], in_memory["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
