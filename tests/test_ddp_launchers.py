"""The same digits-MLP fit under every launcher gives the 1-process numbers (tests/_ddp_launchers.py).

Each launch is a subprocess (never pytest under DDP): a user's own ``lightning.Trainer(strategy="ddp")``,
``torchrun --nproc_per_node=2``, two torchrun "nodes" on loopback, ``ddp_spawn``, a PyDataset on 2
processes; and the failures: an exception on one rank, a rank killed with SIGKILL.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_ddp_launchers.py")
EPOCHS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out, mode, prefix=(), timeout=300):
    """Run the script in ``mode`` writing to ``out``; returns the finished process (stdout + stderr)."""
    out.mkdir()
    cmd = [*prefix, str(SCRIPT), str(out), mode] if prefix else [sys.executable, str(SCRIPT), str(out), mode]
    return subprocess.run(cmd, cwd=out.parent, env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def torchrun(*args):
    return (sys.executable, "-m", "torch.distributed.run", *args)


def result(out, name="result.json"):
    return json.loads((out / name).read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    proc = launch(out, "single")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return result(out)


def assert_like_single(out, single, text, other_ranks=(1,)):
    """History (rtol 1e-4), weights (rtol 1e-3), evaluate / predict on every process, files and bar once."""
    main = result(out)
    assert main["epoch"] == single["epoch"] == list(range(EPOCHS))
    assert list(main["history"]) == list(single["history"])
    for key, values in single["history"].items():
        np.testing.assert_allclose(main["history"][key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(single["weights"], main["weights"]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6)
    for key, value in single["evaluate"].items():
        np.testing.assert_allclose(main["evaluate_alone"][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    ranks = [main] + [result(out, f"result_rank{r}.json") for r in other_ranks]
    for res in ranks:
        np.testing.assert_allclose(res["predictions"], single["predictions"], rtol=1e-4, atol=1e-6)
        for key, value in single["evaluate"].items():
            np.testing.assert_allclose(res["evaluate"][key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    # every checkpoint and CSV row written once, by one process; Keras's "Epoch i/N" printed once
    assert sorted(os.listdir(out / "ckpt")) == [f"m_{e}.weights.h5" for e in range(1, EPOCHS + 1)]
    assert len((out / "log.csv").read_text().splitlines()) == EPOCHS + 1
    for epoch in range(1, EPOCHS + 1):
        assert len(re.findall(rf"^Epoch {epoch}/{EPOCHS}$", text, flags=re.M)) == 1, text[-3000:]


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_users_own_ddp_trainer(tmp_path, single):
    proc = launch(tmp_path / "out", "own_trainer")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_like_single(tmp_path / "out", single, proc.stdout)


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_two_processes(tmp_path, single):
    proc = launch(tmp_path / "out", "torchrun", torchrun("--nproc_per_node=2", f"--master_port={free_port()}"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_like_single(tmp_path / "out", single, proc.stdout)


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_two_nodes_on_loopback(tmp_path, single):
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                *torchrun(
                    "--nnodes=2",
                    f"--node_rank={rank}",
                    "--nproc_per_node=1",
                    "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{port}",
                ),
                str(SCRIPT),
                str(out),
                "twonode",
            ],  # fmt: skip
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert_like_single(out, single, outputs[0][0] + outputs[1][0])


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ddp_spawn_brings_history_and_weights_back(tmp_path, single):
    proc = launch(tmp_path / "out", "spawn")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # evaluate / predict after fit run in the launching process alone: there is no other rank
    assert_like_single(tmp_path / "out", single, proc.stdout, other_ranks=())


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_pydataset_two_processes_equal_one(tmp_path):
    one = launch(tmp_path / "one", "pydataset1")
    assert one.returncode == 0, one.stderr[-3000:]
    two = launch(tmp_path / "two", "pydataset2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert_like_single(tmp_path / "two", result(tmp_path / "one"), two.stdout)
    # the bar counts the real steps: 8 batches of 64 per epoch, not 4 per process
    assert "8/8" in two.stdout


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_an_error_on_one_rank_ends_the_job_with_that_error(tmp_path):
    start = time.monotonic()
    proc = launch(tmp_path / "out", "fail_rank1", timeout=100)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 60, elapsed
    assert "RuntimeError: batch 2 is broken on rank 1" in proc.stderr
    assert "The process of local rank 1" in proc.stderr and "failed with exit code 1" in proc.stderr


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_a_rank_killed_with_sigkill_ends_the_job_with_a_clear_message(tmp_path):
    start = time.monotonic()
    proc = launch(tmp_path / "out", "kill_rank1", timeout=160)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert elapsed < 120, elapsed
    # the launching process says which process died and how (Lightning's child observer may end it first)
    assert "was killed by SIGKILL" in proc.stderr or proc.returncode == -9, proc.stderr[-3000:]
