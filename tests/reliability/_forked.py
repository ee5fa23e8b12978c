"""Forked runs for the kill drivers: each run is a child forked after the imports (a restart costs milliseconds)."""

import os
import sys


def exit_as_python_would(fn, *args):
    """Run ``fn(*args)`` in this forked child and end it with the status Python would exit with."""
    code = 0
    try:
        fn(*args)
    except SystemExit as err:  # e.g. kb.TrainingPreempted: status 143
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_status(status):
    """``os.waitpid``'s status as an exit status, or ``-signal`` for a process a signal ended."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def fork_run(fn, *args):
    """Run ``fn(*args)`` in a forked child; return its exit status (``-signal`` when a signal ended it)."""
    pid = os.fork()
    if pid == 0:
        exit_as_python_would(fn, *args)
    _, status = os.waitpid(pid, 0)
    return exit_status(status)
