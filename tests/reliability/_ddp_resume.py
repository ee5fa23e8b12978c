"""Driver for tests/reliability/test_ddp_resume.py: a 2-process fit killed three ways, resumed each time.

Usage: python _ddp_resume.py OUT_DIR  (the driver; it also starts ``torchrun ... _ddp_resume.py OUT_DIR torchrun``)

Every run is a pair of processes forked after the imports, with the variables SLURM's ``srun`` sets
(``SLURM_NTASKS=2``, ``SLURM_PROCID``, ...): Lightning's ``SLURMEnvironment`` forms the process group, as
on a cluster. The same ``run()`` (a user script: ``kb.callbacks.ResumableCheckpoint(save_freq=4)``,
shuffled arrays, dropout) is called by every run:

* ``kill_rank1``: rank 1 SIGKILLs itself in epoch 2 (rank 0 then fails on its own, or is killed after 60 s);
* ``sigterm``: rank 0 receives SIGTERM in epoch 3 (a preemption): both stop at the next batch, exit 143;
* ``one_process``: the same code on one process: refused (the backup holds 2 processes' positions);
* ``kill_job``: rank 0 SIGKILLs both processes in epoch 4;
* ``resumed``: the same code, finishing; ``reference``: a 2-process run never interrupted (fresh folder);
* ``torchrun``: the script started by ``torchrun --nproc_per_node=2 --max-restarts=1 --rdzv-backend=c10d``
  (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``);
  rank 1 SIGKILLs itself once in epoch 2, torchrun restarts both processes, which resume from the backup;
* ``plain2`` / ``plain1``: the network without dropout (whose masks depend on the process count) on
  2 processes under SLURM's variables / on one process without them: the numbers must agree; ``plain2``
  then fits a generator of batches (dealt out whole under DDP) and keeps what fit warned in ``dealt_warning.txt``.

Rank 0 of each finishing run writes ``<name>.npz`` (weights, optimizer state) and ``<name>.json`` (History).
The driver prints one JSON line: each run's exit statuses, rank 0 first.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

import keras_bridge as kb  # isort: split

import keras
from _forked import exit_as_python_would, exit_status

import keras_bridge.saving.state as kb_state

EPOCHS, BATCH = 4, 32
DDP = {"accelerator": "cpu", "devices": 2, "strategy": "ddp"}
STOPS = {
    "kill_rank1": (1, 1, 6),
    "sigterm": (0, 2, 3),
    "kill_job": (0, 3, 2),
    "torchrun": (1, 1, 6),
}  # rank, epoch, batch


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8)).astype("float32")
    y = (x[:, :4].sum(1) > 0).astype("int64") + (x[:, 4] > 0.5).astype("int64")
    return x, y  # 480 training samples: 15 global batches of 32 per epoch


class Stop(keras.callbacks.Callback):
    def __init__(self, where, sibling_file):
        super().__init__()
        self.where, self.sibling_file, self.epoch = where, sibling_file, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        name, (rank, epoch, at) = self.where
        if (kb.process_rank(), self.epoch, batch) != (rank, epoch, at):
            return
        if name == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        elif name == "torchrun":
            marker = os.path.join(os.path.dirname(self.sibling_file), "torchrun_killed_once")
            if not os.path.exists(marker):  # once: the restarted processes run to the end
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        else:
            if name == "kill_job":
                os.kill(int(open(self.sibling_file).read()), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)


def save_results(folder, name, module, net, history):
    """On rank 0: ``<name>.npz`` (weights, optimizer moments) and ``<name>.json`` (History)."""
    if not kb.is_main_process():
        return
    state = kb_state.training_state(module)["optimizer"]["state"]
    arrays = {f"w{i}": p.detach().numpy() for i, p in enumerate(net.parameters())}
    moments = [v for _, entry in sorted(state.items()) for _, v in sorted(entry.items()) if hasattr(v, "numpy")]
    arrays.update({f"opt{i}": v.numpy() for i, v in enumerate(moments)})
    np.savez(os.path.join(folder, f"{name}.npz"), **arrays)
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        json.dump({"epoch": history.epoch, "history": history.history}, f)


def run(folder, name, devices):
    keras.utils.set_random_seed(0 if name in ("kill_rank1", "reference", "plain1", "plain2", "torchrun") else 1)
    dropout = [] if name.startswith("plain") else [torch.nn.Dropout(0.2)]
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 32), torch.nn.ReLU(), *dropout, torch.nn.Linear(32, 3), torch.nn.Softmax(-1)
    )
    module = kb.KerasModule(net)
    module.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])  # fmt: skip
    shared = name in ("kill_rank1", "sigterm", "one_process", "kill_job", "resumed")
    backup = os.path.join(folder, "backup" if shared else f"backup_{name}")
    callbacks = [kb.callbacks.ResumableCheckpoint(backup, save_freq=4)]
    if name in STOPS:
        callbacks.append(Stop((name, STOPS[name]), os.path.join(folder, "rank1.pid")))
    x, y = data()
    history = module.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.2, verbose=0,
                         callbacks=callbacks, trainer=DDP if devices == 2 else None)  # fmt: skip
    save_results(folder, name, module, net, history)
    if name == "plain2":
        # A generator of batches under DDP is dealt out whole: fit says so, before training, on rank 0.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module.fit((batch for batch in [(x[:64], y[:64])] * 4), epochs=1, verbose=0, trainer=DDP)
        if kb.is_main_process():
            with open(os.path.join(folder, "dealt_warning.txt"), "w") as f:
                f.write("\n".join(str(w.message) for w in caught if "dealt out whole" in str(w.message)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(folder, name, env, target):
    os.environ.update(env)
    exit_as_python_would(target, folder, name, 2 if "SLURM_NTASKS" in env else 1)


def launch(folder, name, processes=2, target=None):
    """Start ``processes`` forked processes as ``srun`` would, each calling ``target(folder, name, devices)``
    (default :func:`run`); wait for them; return their exit statuses."""
    port = str(_free_port())
    pids = []
    for rank in range(processes):
        env = {}
        if processes > 1:
            env = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
                   "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_JOB_ID": "4242",
                   "SLURM_JOB_NAME": "train", "SLURM_NODELIST": "127.0.0.1", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": port}  # fmt: skip
        pid = os.fork()
        if pid == 0:
            _child(folder, name, env, target or run)
        pids.append(pid)
    if processes > 1:
        with open(os.path.join(folder, "rank1.pid"), "w") as f:
            f.write(str(pids[1]))
    statuses = {}
    deadline = None
    while len(statuses) < len(pids):
        for pid in pids:
            if pid in statuses:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = exit_status(status)
                if statuses[pid] != 0 and deadline is None:
                    deadline = time.monotonic() + 60  # a scheduler ends the rest of a failed job
        if deadline is not None and time.monotonic() > deadline:
            for pid in pids:
                if pid not in statuses:
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return [statuses[pid] for pid in pids]


def main(folder):
    ends = {}
    for name in ("kill_rank1", "sigterm", "kill_job", "resumed", "reference", "plain2"):
        if name == "kill_job":  # the backup of 2 processes, resumed on 1: refused, the backup left as it was
            ends["one_process"] = launch(folder, "one_process", processes=1)
        ends[name] = launch(folder, name)
    ends["plain1"] = launch(folder, "plain1", processes=1)
    # Restarts need the c10d rendezvous, and a process group store of their own (not the rendezvous's,
    # shared by default): otherwise the restarted workers may read the first round's addresses and cannot
    # connect (gloo: "Connection refused"; pytorch/pytorch#135712).
    rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_free_port()}"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--max-restarts=1",
               *rendezvous, __file__, folder, "torchrun"]  # fmt: skip
    with open(os.path.join(folder, "torchrun.log"), "w") as log:
        env = dict(os.environ, TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
        ends["torchrun"] = [subprocess.run(command, stdout=log, stderr=log, env=env, timeout=400).returncode]
    print(json.dumps(ends))


if __name__ == "__main__":
    if sys.argv[2:] == ["torchrun"]:
        run(sys.argv[1], "torchrun", 2)
    else:
        main(sys.argv[1])
