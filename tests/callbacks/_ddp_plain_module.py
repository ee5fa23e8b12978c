"""Script for tests/callbacks/test_plain_module.py: the case of ``_plain_module`` in a 2-process DDP fit.

Usage: python _ddp_plain_module.py
Runs the plain LightningModule and the KerasModule one after the other (same processes), each with a
callback that asks for a stop on global rank 1 only; each process writes what it saw to
<kind>_seen_<rank>.json (the test's own record, not a callback file).
"""

import json
import os

import keras
from _plain_module import run


class RankOneStops(keras.callbacks.Callback):
    """Stops on global rank 1 only, after epoch 3: the adapter must make every process stop."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 3 and int(os.environ.get("LOCAL_RANK", "0")) == 1:
            self.model.stop_training = True


def main() -> None:
    for kind in ("plain", "keras"):
        record = run(kind, kind, extra=[RankOneStops()], accelerator="cpu", devices=2, strategy="ddp")
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        if rank != 0:  # rank 0 writes the files; it may still be closing them
            record.pop("csv"), record.pop("files")
        with open(f"{kind}_seen_{rank}.json", "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main()
