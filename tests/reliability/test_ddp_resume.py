"""Exact resume under DDP: a 2-process fit SIGKILLed on one rank, preempted (SIGTERM), SIGKILLed whole, and
resumed each time with the same code, ends with the History and weights of an uninterrupted 2-process run;
so does the fit under ``torchrun --max-restarts=1`` whose rank 1 is SIGKILLed once (torchrun restarts it).

The processes get SLURM's variables (as ``srun`` starts them): Lightning's ``SLURMEnvironment`` forms
the process group, and the same fit without dropout gives the 1-process numbers.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

DRIVER = Path(__file__).with_name("_ddp_resume.py")


def _load(folder, name):
    arrays = np.load(folder / f"{name}.npz")
    return {k: arrays[k] for k in arrays.files}, json.loads((folder / f"{name}.json").read_text())


def _assert_same(got, want, rtol, weights_rtol, atol=1e-7):
    (got_arrays, got_history), (want_arrays, want_history) = got, want
    assert sorted(got_arrays) == sorted(want_arrays)
    for key in want_arrays:
        np.testing.assert_allclose(got_arrays[key], want_arrays[key], rtol=weights_rtol, atol=atol, err_msg=key)
    assert got_history["epoch"] == want_history["epoch"] == [0, 1, 2, 3]
    assert list(got_history["history"]) == list(want_history["history"])
    for key, values in want_history["history"].items():
        np.testing.assert_allclose(got_history["history"][key], values, rtol=rtol, err_msg=key)


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_ddp_fit_killed_three_ways_resumes_to_the_uninterrupted_numbers(tmp_path):
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path)], env=subprocess_env(), capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ends = json.loads(done.stdout.strip().splitlines()[-1])
    assert ends["kill_rank1"][1] == -9 and ends["kill_rank1"][0] != 0  # rank 1 killed; rank 0 failed (or was ended)
    assert ends["sigterm"] == [143, 143]  # both processes stop at the same batch, with the preemption status
    assert ends["one_process"] == [1]  # a backup of 2 processes is not resumed on 1
    assert "was written by a fit on 2 process(es); this fit runs on 1" in done.stderr
    assert ends["kill_job"] == [-9, -9]
    assert ends["resumed"] == ends["reference"] == ends["plain2"] == [0, 0] and ends["plain1"] == [0]
    assert done.stderr.count("fit was stopped by SIGTERM (preemption) during epoch 3") == 1  # printed by rank 0
    assert "ResumableCheckpoint saved an exact resume point in" in done.stderr
    _assert_same(_load(tmp_path, "resumed"), _load(tmp_path, "reference"), rtol=1e-6, weights_rtol=1e-6)
    log = (tmp_path / "torchrun.log").read_text()
    assert ends["torchrun"] == [0] and (tmp_path / "torchrun_killed_once").exists(), log[-3000:]
    _assert_same(_load(tmp_path, "torchrun"), _load(tmp_path, "reference"), rtol=1e-6, weights_rtol=1e-6)
    # SLURM-started 2 processes == 1 process (tolerances of the DDP launcher tests: reduction order differs).
    _assert_same(_load(tmp_path, "plain2"), _load(tmp_path, "plain1"), rtol=1e-5, weights_rtol=1e-4, atol=1e-6)
    assert not (tmp_path / "backup").exists()  # deleted by the completed run
    # Batches that are not split by the processes: said before training, with the global batch and the fix.
    warned = (tmp_path / "dealt_warning.txt").read_text()
    assert "Under DDP with 2 processes, the batches of this generator are dealt out whole" in warned
    assert "every optimizer step trains on 2 of its batches" in warned and "torch Dataset with `batch_size`" in warned


@pytest.mark.ddp
@pytest.mark.timeout(300)
def test_keras_backup_and_restore_killed_under_ddp_resumes_to_the_uninterrupted_numbers(tmp_path):
    """Keras's ``BackupAndRestore`` (translated by the bridge), 2 processes, rank 1 SIGKILLed in epoch 3: the same
    script rerun resumes at epoch 3 from the backup of epoch 2 (Keras's rule) and ends as the uninterrupted run."""
    done = subprocess.run([sys.executable, str(DRIVER.with_name("_ddp_backup.py")), str(tmp_path)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=280)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ends = json.loads(done.stdout.strip().splitlines()[-1])
    assert ends["killed"][1] == -9 and ends["killed"][0] != 0
    assert ends["resumed"] == ends["reference"] == [0, 0]
    (got, resumed), (want, reference) = _load(tmp_path, "resumed"), _load(tmp_path, "reference")
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=key)
    # As in Keras, the resumed fit's History holds the epochs it ran: the uninterrupted run's last two.
    assert resumed["epoch"] == [2, 3] and reference["epoch"] == [0, 1, 2, 3]
    assert list(resumed["history"]) == list(reference["history"])
    for key, values in reference["history"].items():
        np.testing.assert_allclose(resumed["history"][key], values[2:], rtol=1e-6, err_msg=key)
    assert not (tmp_path / "backup").exists()  # deleted by the completed run
