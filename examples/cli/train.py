"""A team's ``train.py``: ``LightningCLI`` over ``keras_bridge.KerasModule``, the whole run in one YAML file.

Run (from anywhere; the data ships with scikit-learn, < 1 minute on 2 CPU cores):

    python examples/cli/train.py fit --config examples/cli/run.yaml
    python examples/cli/train.py fit --config examples/cli/run.yaml --out_dir runs/a   # files elsewhere
    python examples/cli/train.py fit --config examples/cli/run.yaml --print_config   # the full config

Every file of the run (``history.csv``, ``logs/``) is written under the output directory (``--out_dir``,
``./cli_output`` by default), whose path is printed first; the paths in the YAML are relative to it.

``run.yaml`` gives the torch model by ``class_path``, the Keras ``compile`` arguments as Keras strings and
configs, the data as ``KerasDataModule`` arguments, and ``trainer.callbacks`` as Keras callback configs
(``keras_bridge.callbacks.KerasCallbacks``). The numbers, the History and the files are those of the same
run through ``KerasModule.fit`` (``tests/test_cli.py`` checks it).
"""

import contextlib
import os
import sys
from typing import Any, Iterator, List, Optional, Tuple

import keras_bridge as kb  # first: it selects keras's torch backend

# isort: split
from digits import DigitsData  # examples/cli/digits.py: Python puts the script's folder on sys.path
from lightning.pytorch.cli import LightningCLI


def split_out_dir(args: List[str]) -> Tuple[str, List[str]]:
    """``--out_dir DIR`` (or ``--out_dir=DIR``) taken out of ``args``; ``--config`` paths made absolute."""
    out_dir, rest, i = "cli_output", [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--out_dir" and i + 1 < len(args):
            out_dir, i = args[i + 1], i + 2
            continue
        if arg.startswith("--out_dir="):
            out_dir, i = arg.split("=", 1)[1], i + 1
            continue
        if arg == "--config" and i + 1 < len(args):
            rest += [arg, os.path.abspath(args[i + 1])]
            i += 2
            continue
        rest.append(arg)
        i += 1
    return os.path.abspath(out_dir), rest


@contextlib.contextmanager
def working_directory(path: str) -> Iterator[None]:
    os.makedirs(path, exist_ok=True)
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def main(args: Optional[List[str]] = None) -> Any:
    """Run the CLI (``args`` as on the command line; ``None`` reads ``sys.argv``) and return it."""
    out_dir, rest = split_out_dir(list(sys.argv[1:] if args is None else args))
    if "--print_config" not in rest:
        print(f"Writing the run's files (history.csv, logs/) under {out_dir}", flush=True)
    with working_directory(out_dir):
        return LightningCLI(kb.KerasModule, DigitsData, args=rest, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
