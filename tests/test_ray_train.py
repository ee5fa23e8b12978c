"""Ray Train with 2 CPU workers (tests/_ray_fit.py) gives the 1-process numbers; skipped without ``ray[train]``.

Install with ``pip install -e ".[ray]"``; the ``test`` extra does not include it (see the README, "Scaling out").
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train.lightning")

from test_ddp_launchers import assert_like_single, launch, result  # noqa: E402

SCRIPT = Path(__file__).with_name("_ray_fit.py")


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_train_two_workers_match_one_process(tmp_path):
    single = launch(tmp_path / "single", "single")
    assert single.returncode == 0, single.stderr[-3000:]
    out = tmp_path / "out"
    out.mkdir()
    env = subprocess_env()
    ray_path = os.path.dirname(os.path.dirname(ray.__file__))  # where ray is installed, also in the workers
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], ray_path])
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=540)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    reference = result(tmp_path / "single")
    worker_lines = re.sub(r"^.*?\(RayTrainWorker pid=\d+\)(\x1b\[0m)? ", "", proc.stdout + proc.stderr, flags=re.M)
    assert_like_single(out, reference, worker_lines)
    reported = json.loads((out / "ray_metrics.json").read_text())
    # Ray received the last epoch's logs under Keras's names, and its checkpoint loads with kb.load_model
    for key, values in reference["history"].items():
        assert reported["last"][key] == pytest.approx(values[-1], rel=1e-4), key
    for key, value in reference["evaluate"].items():
        assert reported["reloaded_evaluate"][key] == pytest.approx(value, rel=1e-4), key
