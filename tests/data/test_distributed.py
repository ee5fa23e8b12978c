"""keras_bridge/data/distributed.py without a process group: rank/world, the shared seed, the max across
ranks, GlobalBatchInfo, and ``unshard_steps`` (the order that undoes DDP sharding, and its error when
the processes ran different numbers of batches). The collectives themselves run in the ``ddp`` tests.
"""

import pytest
import torch

from keras_bridge.data.distributed import GlobalBatchInfo, max_across_ranks, rank_world, shared_seed, unshard_steps


def test_no_process_group_here():
    assert not (torch.distributed.is_available() and torch.distributed.is_initialized())


def test_rank_world_without_a_process_group():
    assert rank_world() == (0, 1)


@pytest.mark.parametrize("seed", [0, 1337, 2**31 - 1])
def test_shared_seed_is_the_own_seed_on_one_process(seed):
    assert shared_seed(seed) == seed


@pytest.mark.parametrize("value", [0, 7, -3])
def test_max_across_ranks_is_the_own_value_on_one_process(value):
    assert max_across_ranks(value) == value


def test_global_batch_info():
    info = GlobalBatchInfo(global_size=11, world_size=2)
    assert (info.global_size, info.world_size) == (11, 2)
    with pytest.raises(AttributeError):
        info.other = 1  # __slots__: it rides inside every batch


@pytest.mark.parametrize(
    ("per_rank", "expected"),
    [
        ([["a0", "b0"], ["a1", "b1"]], ["a0", "a1", "b0", "b1"]),
        (
            [["a0", "b0", "c0"], ["a1", "b1", "c1"], ["a2", "b2", "c2"]],
            ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"],
        ),
        ([["a", "b", "c"]], ["a", "b", "c"]),
        ([[], []], []),
        ([], []),
    ],
    ids=["2-ranks", "3-ranks", "1-rank", "no-steps", "no-ranks"],
)
def test_unshard_steps_reads_step_by_step_then_rank_by_rank(per_rank, expected):
    assert unshard_steps(per_rank) == expected


def test_unshard_steps_restores_the_input_order_of_sharded_batches():
    # Two global batches of 5 and 3 samples, each split across 2 processes as the loaders do.
    data = torch.arange(8)
    global_batches = [data[:5], data[5:]]
    per_rank = [[b.tensor_split(2)[rank] for b in global_batches] for rank in range(2)]
    assert torch.cat(unshard_steps(per_rank)).tolist() == list(range(8))


def test_unshard_steps_keeps_empty_pieces():
    # A process with nothing left at a step contributes an empty piece, which keeps the order.
    pieces = unshard_steps([[torch.tensor([0, 1]), torch.tensor([4])], [torch.tensor([2, 3]), torch.tensor([])]])
    assert [p.tolist() for p in pieces] == [[0, 1], [2, 3], [4], []]


def test_mismatched_steps_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"different numbers of batches: \[2, 1\]"):
        unshard_steps([["a0", "b0"], ["a1"]])
