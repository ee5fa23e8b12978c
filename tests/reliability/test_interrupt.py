"""Ctrl-C behaves as in Keras: ``KeyboardInterrupt`` in the caller, weights kept, files whole, a next fit works.

Lightning catches the interrupt, ignores SIGINT from then on and exits the process with ``SystemExit``;
the script sends itself SIGINT from a callback in the middle of an epoch and reports what it caught.
"""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).with_name("_interrupt_run.py")


def _sigint_as_in_a_terminal():
    # A suite started in the background (`cmd &` in a script) inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: the script must start as a terminal's or a notebook's process does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_ctrl_c_raises_keyboard_interrupt_and_keeps_the_run(tmp_path, kind):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), kind], env=subprocess_env(), capture_output=True, text=True,
        timeout=150, preexec_fn=_sigint_as_in_a_terminal,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "raised": "KeyboardInterrupt",
        "innermost_frame": "on_train_batch_end",  # where the interrupt arrived: the user's callback
        "sigint_handler_restored": True,
        "weights_changed": True,
        "weights_are_the_interrupted_ones": True,
        "history_epochs": [0],  # the finished epoch; the interrupted one is not recorded, as in Keras
        "checkpoint_loads": True,
        "second_fit_losses": report["second_fit_losses"],
        "second_fit_trained_on": True,
        "second_ctrl_c": "KeyboardInterrupt",
    }
    assert len(report["second_fit_losses"]) == 2
