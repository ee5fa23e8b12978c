"""A preempted fit (SIGTERM mid-epoch): a resume point at the next batch, exit status 143, an exact rerun."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

DRIVER = Path(__file__).with_name("_preempt_run.py")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_sigterm_saves_exits_143_and_the_rerun_ends_as_an_unbroken_run(tmp_path, kind):
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path), kind],
        env=subprocess_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # The scheduler sees a failure it can requeue (128 + SIGTERM), and the user reads why and what to do.
    assert report["ends"] == {"preempted": 143, "resumed": 0, "unbroken": 0}, done.stderr[-3000:]
    assert "fit was stopped by SIGTERM (preemption) during epoch 2" in done.stderr
    assert "ResumableCheckpoint saved an exact resume point in" in done.stderr
    assert "BackupAndRestore saved a backup in" in done.stderr
    assert "Exiting with status 143" in done.stderr
    # The signal arrived in batch 2's hooks; the stop is decided when the next batch ends (batch 3), and
    # the resume point saved there continues at batch 4 (save_freq=3 alone would not have saved there).
    assert report["metadata"]["backup"] == {"epoch": 1, "batch": 4}
    assert report["metadata"]["backup_keras"]["epoch"] == 1  # Keras's rule: the epoch starts again
    resumed = np.load(tmp_path / "resumed.npz")
    unbroken = np.load(tmp_path / "unbroken.npz")
    assert sorted(resumed.files) == sorted(unbroken.files)
    for key in unbroken.files:  # weights and optimizer state
        np.testing.assert_allclose(resumed[key], unbroken[key], rtol=1e-6, atol=1e-7, err_msg=key)
    got = json.loads((tmp_path / "resumed.json").read_text())
    want = json.loads((tmp_path / "unbroken.json").read_text())
    assert got["epoch"] == want["epoch"] == [0, 1, 2, 3]
    assert list(got["history"]) == list(want["history"])
    for key, values in want["history"].items():
        np.testing.assert_allclose(got["history"][key], values, rtol=1e-6, err_msg=key)
    assert not (tmp_path / "backup").exists() and not (tmp_path / "backup_keras").exists()
