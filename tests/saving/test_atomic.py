"""Atomic writes: a save killed half way leaves a temporary file that the next save of the same target removes."""

import os
import signal
import subprocess
import sys
import textwrap

from helpers import subprocess_env

from keras_bridge.saving.atomic import atomic_write


def test_the_next_save_removes_what_a_killed_save_left(tmp_path):
    target = tmp_path / "model.weights.h5"
    target.write_text("version 1")
    killed = textwrap.dedent(f"""
        import os, signal
        from keras_bridge.saving.atomic import atomic_write
        with atomic_write({str(target)!r}) as tmp:
            open(tmp, "w").write("half of version 2")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", killed], env=subprocess_env(), timeout=120)
    assert done.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp.weights.h5")]
    assert len(left) == 1 and target.read_text() == "version 1"  # the kill left the old file and a temporary
    other = tmp_path / "other.weights.h5"
    with atomic_write(str(other)) as tmp:  # another target's save leaves it alone
        open(tmp, "w").write("x")
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".tmp.weights.h5")]) == 1
    with atomic_write(str(target)) as tmp:
        open(tmp, "w").write("version 3")
    assert sorted(os.listdir(tmp_path)) == ["model.weights.h5", "other.weights.h5"]
    assert target.read_text() == "version 3"
