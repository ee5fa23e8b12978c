"""Kill anywhere, lose nothing: a shuffled fit SIGKILLed at six points, restarted each time with the same code.

* ``keras.callbacks.BackupAndRestore(save_freq=2)``: Keras's own semantics. Every restart trains again
  from the last backup: the epoch recorded in its metadata (``_current_epoch`` at the time of the save,
  which Keras sets only at epoch ends) from its first batch, with the weights of that backup.
* ``kb.callbacks.ResumableCheckpoint(save_freq=2)``: the restarted runs continue at the next batch of
  the same shuffled order and end with the weights, optimizer state and per-epoch History of a run
  that was never killed; every batch of every run sees the weights the unbroken run saw.

The driver (``_resume_chain.py``) forks one child process per run after its imports, so a restart
costs milliseconds; each child kills itself with SIGKILL at its kill point.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

DRIVER = Path(__file__).with_name("_resume_chain.py")
SAVE_FREQ = 2
# (hook, epoch, batch): mid-epoch one batch after a backup, on the last batch of an epoch, during
# validation, when an epoch begins, right after an epoch-end backup, on the second batch of the last epoch.
KILLS = [
    ["batch_end", 0, 2],
    ["batch_end", 1, 4],
    ["validation_batch_end", 1, 0],
    ["epoch_begin", 2, 0],
    ["epoch_end", 2, 0],
    ["batch_end", 3, 1],
]


def run_chain(tmp_path, mode, kind):
    config = {"dir": str(tmp_path), "mode": mode, "kind": kind, "save_freq": SAVE_FREQ, "kills": KILLS}
    (tmp_path / "config.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path / "config.json")],
        env=subprocess_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ends = json.loads(done.stdout.strip().splitlines()[-1])["ends"]
    assert ends == ["killed"] * len(KILLS) + ["ok", "ok"], done.stderr[-3000:]
    runs = [[json.loads(line) for line in (tmp_path / f"run{i}.jsonl").read_text().splitlines()] for i in range(7)]
    for records, kill in zip(runs, KILLS):
        assert records[-1] == {"event": "kill"}, kill  # every run died where it was told to
    assert not (tmp_path / "backup").exists()  # deleted by the completed run
    return runs


def load(tmp_path, name):
    arrays = np.load(tmp_path / f"{name}.npz")
    history = json.loads((tmp_path / f"{name}.npz.history.json").read_text())
    return {k: arrays[k] for k in arrays.files}, history


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_backup_and_restore_resumes_as_keras_does(tmp_path, kind):
    runs = run_chain(tmp_path, "keras", kind)
    last_backup = None  # (metadata epoch, weights checksum) of the newest backup on disk
    for index, records in enumerate(runs):
        trained = [r for r in records if r["event"] == "batch"]
        if index > 0 and last_backup is not None:
            begin = records[0]
            assert begin["event"] == "begin"
            assert begin["checksum"] == pytest.approx(last_backup[1], rel=1e-6), index
            assert (trained[0]["epoch"], trained[0]["batch"]) == (last_backup[0], 0), index
        counter, current_epoch = 0, 0  # Keras's BackupAndRestore counters, new in every process
        for record in records:
            if record["event"] == "batch":
                counter += 1
                if counter >= SAVE_FREQ:
                    counter, last_backup = 0, (current_epoch, record["checksum"])
            elif record["event"] == "epoch_end":
                current_epoch = record["epoch"] + 1
    _, history = load(tmp_path, "resumed")
    assert history["epoch"] == list(range(runs[-1][1]["epoch"], 4))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_resumable_checkpoint_ends_as_an_unbroken_run(tmp_path, kind):
    runs = run_chain(tmp_path, "exact", kind)
    unbroken = [json.loads(line) for line in (tmp_path / "rununbroken.jsonl").read_text().splitlines()]
    expected = {(r["event"], r["epoch"], r.get("batch")): r["checksum"] for r in unbroken if r["event"] != "begin"}
    for index, records in enumerate(runs):
        for record in records:
            if record["event"] in ("batch", "epoch_end"):
                key = (record["event"], record["epoch"], record.get("batch"))
                assert record["checksum"] == pytest.approx(expected[key], rel=1e-5), (index, key)
    resumed, resumed_history = load(tmp_path, "resumed")
    reference, reference_history = load(tmp_path, "unbroken")
    assert sorted(resumed) == sorted(reference) and any(k.startswith("opt") for k in reference)
    for key in reference:  # weights and optimizer state
        np.testing.assert_allclose(resumed[key], reference[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert resumed_history["epoch"] == reference_history["epoch"] == [0, 1, 2, 3]
    assert list(resumed_history["history"]) == list(reference_history["history"])
    for key, values in reference_history["history"].items():
        np.testing.assert_allclose(resumed_history["history"][key], values, rtol=1e-5, err_msg=key)
    assert not os.path.exists(tmp_path / "backup_unbroken")
