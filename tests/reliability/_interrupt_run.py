"""Script for tests/reliability/test_interrupt.py: Ctrl-C (SIGINT) in the middle of an epoch, as a notebook user does.

Usage: python _interrupt_run.py OUT_DIR KIND(torch|keras)

Prints one JSON line with what the caller saw: the exception, the SIGINT handler afterwards, the weights
at the interrupted batch and after the interrupt, the History, the checkpoint, and a second fit.
"""

import json
import os
import signal
import sys
import traceback

import keras
import numpy as np
import torch

import keras_bridge as kb  # noqa: I001  (selects keras's torch backend)


def make_module(kind):
    keras.utils.set_random_seed(0)
    if kind == "torch":
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
    else:
        inputs = keras.Input((5,))
        module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8, "tanh")(inputs))))
    module.compile(optimizer="adam", loss="mse")
    return module


def weights(module):
    return [p.detach().numpy().copy() for p in module.model.parameters()]


class CtrlC(keras.callbacks.Callback):
    """Sends this process SIGINT during batch 3 of epoch 2 (as Ctrl-C in a terminal or a notebook's stop)."""

    def __init__(self, module):
        super().__init__()
        self.module, self.epoch, self.seen = module, None, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (1, 3):
            self.seen = weights(self.module)
            os.kill(os.getpid(), signal.SIGINT)


def main(out, kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 5)).astype("float32")
    y = x.sum(1, keepdims=True).astype("float32")
    module = make_module(kind)
    before = weights(module)
    ctrl_c = CtrlC(module)
    path = os.path.join(out, "model.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, save_freq=2)
    report = {}
    try:
        module.fit(x, y, batch_size=16, epochs=5, shuffle=True, verbose=0, callbacks=[checkpoint, ctrl_c])
        report["raised"] = None
    except KeyboardInterrupt:
        report["raised"] = "KeyboardInterrupt"
        report["innermost_frame"] = traceback.extract_tb(sys.exc_info()[2])[-1].name
    except SystemExit as exit:
        report["raised"] = f"SystemExit({exit.code})"
    report["sigint_handler_restored"] = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    after = weights(module)
    report["weights_changed"] = any(not np.array_equal(a, b) for a, b in zip(before, after))
    report["weights_are_the_interrupted_ones"] = all(np.array_equal(a, b) for a, b in zip(ctrl_c.seen, after))
    report["history_epochs"] = module.history.epoch
    loaded = kb.load_model(path)  # the checkpoint written before the interrupt is whole
    report["checkpoint_loads"] = loaded.compiled
    history = module.fit(x, y, batch_size=16, epochs=2, verbose=0)
    report["second_fit_losses"] = history.history["loss"]
    report["second_fit_trained_on"] = all(
        not np.array_equal(a, b) for a, b in zip(after, weights(module))
    )  # fmt: skip
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let the signal be handled here
        report["second_ctrl_c"] = "ignored"
    except KeyboardInterrupt:
        report["second_ctrl_c"] = "KeyboardInterrupt"
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
