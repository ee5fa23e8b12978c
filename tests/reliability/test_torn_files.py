"""No torn files: a kill while a file is written leaves the previous good file or the new one, never half of one.

Every format the bridge writes during a fit is rewritten in a loop by a child process that is SIGKILLed
at random moments (three times per format); the file under its final name always loads and holds one
whole version. A fit with ``CSVLogger(append=True)`` and ``TensorBoard`` killed three times (right after
an epoch's row and events were written but before its backup, then at random moments) and resumed by
``BackupAndRestore`` ends with every epoch logged exactly once, in whole rows and events.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

DRIVER = Path(__file__).with_name("_torn_files.py")


def run(*args):
    done = subprocess.run(
        [sys.executable, str(DRIVER), *map(str, args)], env=subprocess_env(), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_kill_during_a_save_never_leaves_a_torn_file(tmp_path):
    report = run("saves", tmp_path, 3)
    assert sorted(report) == sorted(
        ["torch.keras", "torch.weights.h5", "torch.weights.pt", "torch.ckpt", "torchbackup", "keras.keras",
         "keras.weights.h5"]
    )  # fmt: skip
    for name, result in report.items():
        # Every kill left a file that loads, holding one whole version (0: the good file written before).
        assert len(result["versions"]) == 3 and all(v == int(v) >= 0 for v in result["versions"]), (name, result)
    assert any(v > 0 for result in report.values() for v in result["versions"])  # some kills came after new saves
    assert any(result["temp_files"] for result in report.values())  # and some in the middle of one


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_logs_of_a_killed_and_resumed_run_hold_every_epoch_once(tmp_path):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    report = run("logs", tmp_path)
    assert report["ends"] == ["killed", "killed", "killed", 0], report
    with open(tmp_path / "log.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [int(row[0]) for row in rows[1:]] == list(range(8))  # whole rows, no epoch twice
    assert all(len(row) == 3 and all(row) for row in rows[1:])
    for folder in ("train", "validation"):
        events = EventAccumulator(str(tmp_path / "tb" / folder))
        events.Reload()  # as TensorBoard reads them: the kill's half-written event is skipped
        assert [e.step for e in events.Tensors("epoch_loss")] == list(range(8)), folder
