"""The single-process parts of scaling out: ranks from the launchers' environment, what ``ddp_spawn`` pickles,
PyDataset batch splitting, the run world, the failed-process message. The multi-process runs are in
tests/test_ddp_launchers.py.
"""

import io
import pickle
import signal

import numpy as np
import pytest
import torch

import keras_bridge as kb
from keras_bridge.callbacks.progbar import make_progbar_logger
from keras_bridge.data import distributed
from keras_bridge.data.adapters import pydataset
from keras_bridge.data.adapters.array import array_loader
from keras_bridge.trainer.connector import failed_process

LAUNCHER_VARS = ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"RANK": "3"}, 3),  # torchrun
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, 2),  # srun
        ({"SLURM_PROCID": "2"}, 0),  # a SLURM allocation without srun tasks: not a rank
        ({"LOCAL_RANK": "1"}, 1),  # Lightning's ddp launcher, one node
        ({"LOCAL_RANK": "1", "NODE_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, 3),
    ],
)
def test_process_rank_from_the_launchers_environment(monkeypatch, env, rank):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert kb.process_rank() == rank
    assert kb.is_main_process() == (rank == 0)


def test_a_one_process_run_ignores_the_process_group():
    try:
        distributed.set_run_world(1)
        assert distributed.rank_world() == (0, 1) and not distributed.group_in_use()
    finally:
        distributed.set_run_world(None)


def test_array_loader_pickles_for_ddp_spawn_without_temporary_shared_memory():
    from multiprocessing.reduction import ForkingPickler

    loader = array_loader(torch.arange(10.0).reshape(5, 2), torch.arange(5), batch_size=2)
    loader.generator.manual_seed(7)
    buf = io.BytesIO()
    ForkingPickler(buf).dump(loader)  # a torch.Generator's state tensor would be shared through a closed fd
    copy = pickle.loads(buf.getvalue())
    assert torch.equal(copy.generator.get_state(), loader.generator.get_state())
    assert [b[0].tolist() for b in copy] == [b[0].tolist() for b in loader]


def test_progbar_logger_pickles():
    logger = make_progbar_logger()
    logger.verbose = 2
    copy = pickle.loads(pickle.dumps(logger))
    assert type(copy).__name__ == "LazyProgbarLogger" and copy.verbose == 2


def test_split_rows_keeps_the_structure_and_the_global_size():
    x = {"a": torch.arange(5), "b": np.arange(5)}
    parts = [pydataset.split_rows((x, torch.arange(5), None), rank, 2) for rank in (0, 1)]
    assert [p[0]["a"].tolist() for p in parts] == [[0, 1, 2], [3, 4]]
    assert all(p[2] is None and p[3].global_size == 5 and p[3].world_size == 2 for p in parts)


def test_set_pydataset_ddp(monkeypatch):
    monkeypatch.setattr(pydataset, "DDP_BATCHES", "split")
    kb.data.set_pydataset_ddp("deal")
    assert pydataset.DDP_BATCHES == "deal"
    with pytest.raises(ValueError, match="'split' or 'deal'"):
        kb.data.set_pydataset_ddp("shard")


class _Proc:
    def __init__(self, code, pid=11):
        self.code, self.pid = code, pid

    def poll(self):
        return self.code


class _Trainer:
    def __init__(self, procs):
        self.strategy = type("S", (), {"launcher": type("L", (), {"procs": procs})()})()


def test_failed_process_names_the_rank_and_the_signal():
    assert failed_process(_Trainer([_Proc(0)]), wait=0) == ""
    assert failed_process(_Trainer([]), wait=0) == ""
    killed = failed_process(_Trainer([_Proc(-signal.SIGKILL, pid=42)]), wait=0)
    assert "local rank 1 (pid 42) was killed by SIGKILL" in killed
    assert "failed with exit code 1" in failed_process(_Trainer([_Proc(1)]), wait=0)
    assert failed_process(_Trainer([_Proc(None)]), wait=0.2) == ""  # still running: no verdict


def test_the_run_world_is_declared_for_the_call_only():
    from keras_bridge.trainer.connector import TrainerConnector

    with TrainerConnector({"accelerator": "cpu", "logger": False}, [], {"max_epochs": 1}):
        assert distributed._run_world == 1
    assert distributed._run_world is None  # a plain Lightning run afterwards trusts the process group
