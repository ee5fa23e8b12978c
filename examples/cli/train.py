"""A team's ``train.py``: ``LightningCLI`` over ``keras_bridge.KerasModule``, the whole run in one YAML file.

Run (from anywhere; the data ships with scikit-learn, < 1 minute on 2 CPU cores):

    python examples/cli/train.py fit --config examples/cli/run.yaml
    python examples/cli/train.py fit --config examples/cli/run.yaml --print_config   # the full config

``run.yaml`` gives the torch model by ``class_path``, the Keras ``compile`` arguments as Keras strings and
configs, the data as ``KerasDataModule`` arguments, and ``trainer.callbacks`` as Keras callback configs
(``keras_bridge.callbacks.KerasCallbacks``). The numbers, the History and the files are those of the same
run through ``KerasModule.fit`` (``tests/test_cli.py`` checks it).
"""

from typing import Any, List, Optional

import keras_bridge as kb  # first: it selects keras's torch backend

# isort: split
from digits import DigitsData  # examples/cli/digits.py: Python puts the script's folder on sys.path
from lightning.pytorch.cli import LightningCLI


def main(args: Optional[List[str]] = None) -> Any:
    """Run the CLI (``args`` as on the command line; ``None`` reads ``sys.argv``) and return it."""
    return LightningCLI(kb.KerasModule, DigitsData, args=args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
