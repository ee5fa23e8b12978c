"""Keras callbacks under 2-process DDP (gloo on CPU): one decision for all ranks, files from rank 0 only."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_ddp_callbacks.py")


@pytest.mark.ddp
@pytest.mark.slow
def test_decisions_are_agreed_and_files_written_once(tmp_path):
    env = subprocess_env()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    deadline = time.time() + 60  # rank 1 may finish writing its record just after rank 0 exits
    while not (tmp_path / "seen_1.json").exists() and time.time() < deadline:
        time.sleep(0.5)
    seen = [json.loads((tmp_path / f"seen_{rank}.json").read_text()) for rank in (0, 1)]
    for record in seen:
        assert record["epoch"] == [0, 1, 2]  # rank 1 alone asked to stop after epoch 2: both stopped
        assert record["lrs"] == [0.10000000149011612, 0.05000000074505806, 0.02500000037252903]
        assert record["resumed_epoch"] == [3, 4]  # both resumed from the backup written by rank 0
    assert seen[0]["weights"] == seen[1]["weights"]
    assert seen[0]["history"] == seen[1]["history"]
    # every file exactly once, written by rank 0
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["m_1.keras", "m_2.keras", "m_3.keras"]
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    assert [len(os.listdir(tmp_path / "tb" / d)) for d in ("train", "validation")] == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "log.csv", "seen_0.json", "seen_1.json", "tb"]
