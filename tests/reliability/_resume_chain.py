"""Driver for tests/reliability/test_kill_resume.py: one fit, SIGKILLed again and again, restarted each time.

Usage: python _resume_chain.py CONFIG_JSON

CONFIG: {"dir": folder, "mode": "keras" (keras.callbacks.BackupAndRestore) | "exact" (kb.callbacks.ResumableCheckpoint),
"kind": "torch" | "keras", "kills": [[hook, epoch, batch], ...], "save_freq": N}.

Every run is a fresh child process (forked after the imports, so a run starts in milliseconds) that calls
the same ``run()`` a user script would; the child kills itself with SIGKILL at its kill point (after the
backup callback has run for that hook). Run ``k`` writes ``run{k}.jsonl``: the weights checksum when
training begins (after the backup was restored) and at every batch end and epoch end. The last run is
not killed and writes ``resumed.npz``; one more run, in a fresh folder and never killed, writes
``unbroken.npz``. Only the first run (and the unbroken one) call ``keras.utils.set_random_seed(0)``: the
resumed runs use seed 1, so their initial weights, shuffle seed and dropout masks differ unless the
backup restores them.
"""

import json
import os
import signal
import sys

import keras
import numpy as np
import torch
from _forked import fork_run

import keras_bridge as kb  # noqa: I001  (selects keras's torch backend)
import keras_bridge.saving.state as kb_state

EPOCHS, BATCH = 4, 16


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (np.sin(x).sum(1, keepdims=True) + 0.1 * rng.normal(size=(96, 1))).astype("float32")
    return x, y  # 72 training samples (5 batches, the last one of 8) and 24 validation samples


def make_module(kind):
    if kind == "torch":
        net = torch.nn.Sequential(
            torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
        )
        module = kb.KerasModule(net)
        schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.9)
        module.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9), loss="mse", metrics=["mae"])
        return module
    inputs = keras.Input((5,), name="x")
    hidden = keras.layers.Dropout(0.2)(keras.layers.Dense(16, activation="tanh")(inputs))
    module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(1, name="y")(hidden)))
    module.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
    return module


def weights(module):
    if module.is_keras:
        return [np.array(v.numpy()) for v in module.model.trainable_variables]
    return [p.detach().numpy().copy() for p in module.model.parameters()]


def optimizer_state(module):
    if module.is_keras:
        return [np.array(v.numpy()) for v in module.model.optimizer.variables]
    state = kb_state.training_state(module)["optimizer"]["state"]
    return [v.numpy() for _, entry in sorted(state.items()) for _, v in sorted(entry.items()) if hasattr(v, "numpy")]


def checksum(module):
    return float(sum(np.abs(w).sum() for w in weights(module)))


class Recorder(keras.callbacks.Callback):
    """Logs the weights checksum; kills the process at its kill point."""

    def __init__(self, module, log_path, kill):
        super().__init__()
        self.module, self.log, self.kill = module, open(log_path, "w"), kill
        self.epoch = None

    def write(self, **record):
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

    def maybe_kill(self, hook, epoch, batch):
        if self.kill is not None and [hook, epoch, batch] == self.kill:
            self.write(event="kill")
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_begin(self, logs=None):
        self.write(event="begin", checksum=checksum(self.module))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.maybe_kill("epoch_begin", epoch, 0)

    def on_train_batch_end(self, batch, logs=None):
        self.write(event="batch", epoch=self.epoch, batch=batch, checksum=checksum(self.module))
        self.maybe_kill("batch_end", self.epoch, batch)

    def on_test_batch_end(self, batch, logs=None):
        self.maybe_kill("validation_batch_end", self.epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        self.write(event="epoch_end", epoch=epoch, checksum=checksum(self.module))
        self.maybe_kill("epoch_end", epoch, 0)


def run(config, index, kill, backup_dir, out):
    keras.utils.set_random_seed(0 if index in (0, "unbroken") else 1)
    module = make_module(config["kind"])
    if config["mode"] == "exact":
        backup = kb.callbacks.ResumableCheckpoint(backup_dir, save_freq=config["save_freq"])
    else:
        backup = keras.callbacks.BackupAndRestore(backup_dir, save_freq=config["save_freq"])
    recorder = Recorder(module, os.path.join(config["dir"], f"run{index}.jsonl"), kill)
    x, y = data()
    history = module.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.25, shuffle=True, verbose=0,
        callbacks=[backup, recorder],
    )  # fmt: skip
    arrays = {f"w{i}": w for i, w in enumerate(weights(module))}
    arrays.update({f"opt{i}": s for i, s in enumerate(optimizer_state(module))})
    np.savez(out, **arrays)
    with open(out + ".history.json", "w") as f:
        json.dump({"epoch": history.epoch, "history": history.history}, f)


def in_child(fn, *args):
    """Run ``fn`` in a forked child; return how it ended ("ok", "killed" or the error)."""
    status = fork_run(fn, *args)
    if status < 0:
        return "killed" if -status == signal.SIGKILL else f"signal {-status}"
    return "ok" if status == 0 else f"exit {status}"


def main(config_path):
    with open(config_path) as f:
        config = json.load(f)
    folder = config["dir"]
    ends = []
    for index, kill in enumerate([*config["kills"], None]):
        out = os.path.join(folder, "resumed.npz")
        ends.append(in_child(run, config, index, kill, os.path.join(folder, "backup"), out))
    unbroken = os.path.join(folder, "unbroken.npz")
    ends.append(in_child(run, config, "unbroken", None, os.path.join(folder, "backup_unbroken"), unbroken))
    print(json.dumps({"ends": ends}))


if __name__ == "__main__":
    main(sys.argv[1])
