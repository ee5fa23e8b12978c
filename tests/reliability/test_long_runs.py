"""Long runs: 200 fits in one process leak neither memory, files nor threads; worker processes never outlive a fit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

HERE = Path(__file__).parent


def run(script, *args):
    done = subprocess.run(
        [sys.executable, str(HERE / script), *map(str, args)], env=subprocess_env(), capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_200_fits_in_one_process_keep_memory_files_and_threads_flat():
    report = run("_long_run.py", 200)
    growth = report["end"]["rss_mb"] - report["warm"]["rss_mb"]
    assert growth < 50, report  # measured: about 2 MB over the 180 fits after the warm-up
    assert report["end"]["fds"] == report["start"]["fds"], report
    assert report["end"]["threads"] == report["start"]["threads"], report


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pydataset_worker_processes_never_outlive_the_fit():
    report = run("_workers_run.py", 20)
    assert report["before"] == [] and report["epochs"] == 20 and report["workers_seen"] == 4, report
    assert report["after_fit"] == [], report
    assert "Data.__getitem__(5)" in report["dataset_error"] and "batch 5 is corrupt" in report["dataset_error"]
    assert report["after_dataset_error"] == [], report
    assert report["callback_error"] == "the callback failed while the workers were busy"
    assert report["after_callback_error"] == [], report
