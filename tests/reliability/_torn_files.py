"""Driver for tests/reliability/test_torn_files.py: SIGKILL while files are being written, then read them back.

Usage: python _torn_files.py saves FOLDER TRIALS
       python _torn_files.py logs FOLDER

``saves``: for every format the bridge writes during a fit (``.keras``, ``.weights.h5``, ``.weights.pt``,
``.ckpt``, a ``BackupAndRestore`` backup; ``.keras`` and ``.weights.h5`` of a Keras model too), a good
file is written first; then, TRIALS times, a forked child rewrites the file in a loop, each version
marked by filling one bias with the version number, and is SIGKILLed after a random delay. After every
kill the file under its final name must load and hold one whole version.

``logs``: a fit with ``BackupAndRestore``, ``CSVLogger(append=True)`` and ``TensorBoard`` is killed
right after the CSV row and the TensorBoard events of epoch 2 were written but before the backup of
that epoch (so the resumed run trains epoch 2 again), then at two random moments, then completes.

Each prints one JSON line.
"""

import json
import os
import random
import signal
import sys
import time

import keras
import numpy as np
import torch

import keras_bridge as kb  # noqa: I001  (selects keras's torch backend)
import keras_bridge.saving.formats as formats

WIDTH = 512


def torch_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, WIDTH),
                              torch.nn.Tanh(), torch.nn.Linear(WIDTH, 4))  # fmt: skip
    module = kb.KerasModule(net)
    module.compile(optimizer="adam", loss="mse")
    return module


def keras_module():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((WIDTH,))
    hidden = keras.layers.Dense(WIDTH, activation="tanh")(keras.layers.Dense(WIDTH, activation="tanh")(inputs))
    module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(4, name="out")(hidden)))
    module.compile(optimizer="adam", loss="mse")
    return module


def marker_tensor(module):
    return module.model.layers[-1].bias if module.is_keras else module.model[-1].bias


def set_marker(module, value):
    if module.is_keras:
        marker_tensor(module).assign(np.full((4,), value, "float32"))
    else:
        with torch.no_grad():
            marker_tensor(module).fill_(value)


def read_marker(kind, fmt, path, fresh):
    """The version held by the file at ``path`` (read into ``fresh``); raises if the file does not load."""
    if fmt == "backup":
        states, _ = formats.read_state_file(path)
        values = [v for k, v in states["model"].items() if k.endswith("4.bias")]
        return values[0].numpy()
    if fmt == ".keras" and kind == "keras":
        return np.asarray(keras.models.load_model(path).layers[-1].bias.numpy())
    if fmt == ".keras":
        return kb.load_model(path).model[-1].bias.detach().numpy()
    fresh.load_weights(path)
    tensor = marker_tensor(fresh)
    return np.asarray(tensor.numpy()) if kind == "keras" else tensor.detach().numpy()


def save(module, fmt, path):
    if fmt == "backup":
        formats.write_state_file(path, module, {"epoch": 0})
    elif fmt == ".keras":
        module.save(path)
    else:
        module.save_weights(path)


def saves(folder, trials):
    rng = random.Random(0)
    x, y = np.zeros((8, WIDTH), "float32"), np.zeros((8, 4), "float32")
    report = {}
    for kind, fmts in (("torch", [".keras", ".weights.h5", ".weights.pt", ".ckpt", "backup"]),
                       ("keras", [".keras", ".weights.h5"])):  # fmt: skip
        module = torch_module() if kind == "torch" else keras_module()
        module.fit(x, y, epochs=1, verbose=0)  # the optimizer state exists; a .ckpt needs the Trainer
        fresh = torch_module() if kind == "torch" else keras_module()
        for fmt in fmts:
            path = os.path.join(folder, f"{kind}{fmt if fmt != 'backup' else '.backup.h5'}")
            set_marker(module, 0.0)
            started = time.perf_counter()
            save(module, fmt, path)
            seconds = time.perf_counter() - started
            versions = []
            for _ in range(trials):
                pid = os.fork()
                if pid == 0:
                    version = 1
                    while True:
                        set_marker(module, float(version))
                        save(module, fmt, path)
                        version += 1
                time.sleep(rng.uniform(0.5, 4.0) * seconds)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                values = read_marker(kind, fmt, path, fresh)  # must load under its final name
                assert len(set(values.tolist())) == 1, values  # one whole version, not a mix
                versions.append(float(values[0]))
            leftovers = [n for n in os.listdir(folder) if n.startswith(".") and ".tmp" in n]
            report[f"{kind}{fmt}"] = {"save_seconds": round(seconds, 3), "versions": versions,
                                      "temp_files": len(leftovers)}  # fmt: skip
            for name in leftovers:  # the temporary files of killed writes, never under a final name
                os.remove(os.path.join(folder, name))
    print(json.dumps(report))


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class Pace(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.03)


def log_run(folder, kill_epoch):
    keras.utils.set_random_seed(0)
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
    module.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = x.sum(1, keepdims=True)
    callbacks = [
        keras.callbacks.CSVLogger(os.path.join(folder, "log.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(folder, "tb")),
        *([KillAt(kill_epoch)] if kill_epoch is not None else []),
        keras.callbacks.BackupAndRestore(os.path.join(folder, "backup"), save_freq=3),
        Pace(),
    ]
    module.fit(x, y, batch_size=8, epochs=8, validation_split=0.25, verbose=0, callbacks=callbacks)


def logs(folder):
    rng = random.Random(1)
    ends = []
    plan = [(2, None), (None, rng.uniform(0.3, 1.2)), (None, rng.uniform(0.3, 1.2)), (None, None)]
    for kill_epoch, delay in plan:
        pid = os.fork()
        if pid == 0:
            try:
                log_run(folder, kill_epoch)
                code = 0
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            os._exit(code)
        if delay is not None:
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        ends.append("killed" if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    print(json.dumps({"ends": ends}))


if __name__ == "__main__":
    if sys.argv[1] == "saves":
        saves(sys.argv[2], int(sys.argv[3]))
    else:
        logs(sys.argv[2])
