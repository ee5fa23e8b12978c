"""A torch-module fit with torch's loss and the bridge's own metric and optimizer strings never imports keras
(whose import alone is about 130 MB of resident memory), and gives the numbers of the same fit with keras loaded
(where every structure, metric, dtype and History comes from Keras itself)."""

import json
import subprocess
import sys

import pytest
from helpers import subprocess_env

FIT = """
import json, sys
if sys.argv[1] == "keras-first":
    import keras  # noqa: F401
import numpy as np, torch
import keras_bridge as kb

torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 6)).astype("float32")
y = rng.integers(0, 3, size=96)
module = kb.KerasModule(net)
module.compile(optimizer="rmsprop", loss=torch.nn.CrossEntropyLoss(), metrics=["accuracy", "acc"])
history = module.fit(x, y, batch_size=16, epochs=2, validation_split=0.25,
                     class_weight={0: 1.0, 1: 2.0, 2: 0.5}, verbose=int(sys.argv[2]))
print(json.dumps({"keras": "keras" in sys.modules, "history": history.history, "epoch": history.epoch,
                  "params": history.params, "model_history": module.history is history,
                  "weights": [p.detach().double().sum().item() for p in net.parameters()]}))
"""


def _fit(order: str, verbose: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", FIT, order, str(verbose)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("verbose", [0])  # verbose >= 1 prints with Keras's own ProgbarLogger
def test_torch_module_fit_does_not_import_keras_and_matches(verbose):
    alone = _fit("bridge-only", verbose)
    with_keras = _fit("keras-first", verbose)
    assert alone["keras"] is False
    assert with_keras["keras"] is True
    assert sorted(alone["history"]) == ["acc", "accuracy", "loss", "val_acc", "val_accuracy", "val_loss"]
    # Same code path for the maths; exact equality of every logged number and weight.
    for key in ("history", "epoch", "params", "weights"):
        assert alone[key] == with_keras[key], key
    assert alone["model_history"] and with_keras["model_history"]
