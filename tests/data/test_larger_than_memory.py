"""Data larger than memory: a read-only ``np.memmap`` or an HDF5 dataset three times a memory limit trains, with the
in-memory numbers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPTS = {"memmap": "_memmap_fit.py", "h5py": "_h5_fit.py"}


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_data_three_times_a_memory_limit_trains_as_in_memory(tmp_path, kind):
    """``x`` as a read-only ``np.memmap`` or an ``h5py.Dataset`` (``shuffle="batch"``, a validation split)."""
    script = Path(__file__).with_name(SCRIPTS[kind])
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=subprocess_env(), capture_output=True,
                          text=True, timeout=360)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["data_bytes"] >= 3 * report["limit_headroom"]
    limited, in_memory = report["limited"], report["memory"]
    # The data is never copied into private memory (the limit would refuse it): the growth is the model's.
    assert limited["anon_growth"] < report["limit_headroom"] / 4, limited["anon_growth"]
    # torch's "The given NumPy array is not writable" warning does not reach the user.
    assert limited["warnings"] == [] and in_memory["warnings"] == []
    assert sorted(limited["history"]) == sorted(in_memory["history"])
    assert {"loss", "mae"} <= set(in_memory["history"])
    for key, values in in_memory["history"].items():
        np.testing.assert_allclose(limited["history"][key], values, rtol=1e-6, err_msg=key)
    for a, b in zip(limited["weights"], in_memory["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
