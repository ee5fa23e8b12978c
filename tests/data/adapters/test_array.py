"""In-memory arrays (keras_bridge/data/adapters/array.py): Keras's batching order, steps and splits.

Covers ``GlobalBatchSampler`` with ``shuffle`` False / True / ``"batch"`` (the same seed gives the same
order, other epochs other permutations, every epoch covers every sample once), ``steps_per_epoch``
carrying over between epochs (10 samples, batch 3, 3 steps: the second epoch gets the one batch
left and Keras's warning), ``len()``; ``array_loader`` batches; ``train_validation_split`` (the last
fraction, before shuffling, split where Keras splits); ``check_cardinality`` / ``check_batch_size``
errors; ``is_array_structure``.
"""

import warnings

import numpy as np
import pytest
import torch
from keras.src.trainers.data_adapters.array_slicing import train_validation_split as keras_train_validation_split

from keras_bridge.data.adapters.array import (
    ArrayBatchDataset,
    GlobalBatchSampler,
    array_loader,
    check_batch_size,
    check_cardinality,
    is_array_structure,
    train_validation_split,
)


def epoch_batches(sampler, epoch=None):
    if epoch is not None:
        sampler.set_epoch(epoch)
    return [b.tolist() for b in sampler]


def epoch_with_warnings(sampler, epoch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = epoch_batches(sampler, epoch)
    return batches, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------------------- GlobalBatchSampler
def test_no_shuffle_is_keras_order_with_a_short_last_batch():
    sampler = GlobalBatchSampler(10, 3)
    assert epoch_batches(sampler) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert epoch_batches(sampler, epoch=1) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert len(sampler) == 4 and sampler.batches_per_pass == 4


def test_batches_are_index_tensors():
    batch = next(iter(GlobalBatchSampler(5, 2, shuffle=True)))
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.int64


def test_shuffle_true_draws_a_permutation_per_epoch_from_the_seed():
    a, b = GlobalBatchSampler(10, 3, shuffle=True, seed=7), GlobalBatchSampler(10, 3, shuffle=True, seed=7)
    first = epoch_batches(a, epoch=0)
    assert first == epoch_batches(b, epoch=0)  # same seed, same epoch: same order
    assert [len(x) for x in first] == [3, 3, 3, 1]
    assert sorted(sum(first, [])) == list(range(10))
    assert first != [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    second = epoch_batches(a, epoch=1)
    assert second != first and sorted(sum(second, [])) == list(range(10))
    assert epoch_batches(a, epoch=0) == first  # an epoch's order depends on the epoch number only
    assert epoch_batches(GlobalBatchSampler(10, 3, shuffle=True, seed=8), epoch=0) != first


def test_shuffle_true_uses_its_own_generator():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    epoch_batches(GlobalBatchSampler(10, 3, shuffle=True, seed=3))
    assert torch.equal(torch.rand(1), before)  # the global RNG is not consumed


def test_shuffle_batch_shuffles_inside_each_batch_only():
    sampler = GlobalBatchSampler(10, 3, shuffle="batch", seed=5)
    batches = epoch_batches(sampler, epoch=0)
    assert [sorted(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert batches != [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert batches == epoch_batches(GlobalBatchSampler(10, 3, shuffle="batch", seed=5), epoch=0)
    later = [epoch_batches(sampler, epoch=e) for e in range(1, 6)]
    assert any(b != batches for b in later)
    assert all([sorted(x) for x in b] == [sorted(x) for x in batches] for b in later)


def test_steps_per_epoch_carry_over_and_run_out_with_a_warning():
    sampler = GlobalBatchSampler(10, 3, steps_per_epoch=3)
    assert len(sampler) == 3
    batches, caught = epoch_with_warnings(sampler, 0)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and caught == []
    batches, caught = epoch_with_warnings(sampler, 1)
    assert batches == [[9]]  # what was left of the pass
    assert len(caught) == 1 and "ran out of data after 1 of steps_per_epoch=3 batches" in caught[0]
    batches, caught = epoch_with_warnings(sampler, 2)
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and caught == []  # a new pass
    state = sampler.state_dict()
    assert (state["epoch"], state["passes"], state["pass_position"], state["epoch_position"]) == (2, 2, 3, 3)


def test_steps_per_epoch_dividing_the_pass_never_warns():
    sampler = GlobalBatchSampler(12, 3, steps_per_epoch=2)
    seen = [epoch_with_warnings(sampler, e) for e in range(4)]
    assert [b for b, _ in seen] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]] * 2
    assert all(w == [] for _, w in seen)


def test_steps_per_epoch_shuffles_each_new_pass():
    sampler = GlobalBatchSampler(6, 2, shuffle=True, seed=1, steps_per_epoch=3)
    first, second = epoch_batches(sampler, 0), epoch_batches(sampler, 1)
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == list(range(6))
    assert first != second  # pass 1 draws another permutation than pass 0
    assert first == epoch_batches(GlobalBatchSampler(6, 2, shuffle=True, seed=1, steps_per_epoch=3), 0)


@pytest.mark.parametrize(("steps", "length"), [(None, 4), (2, 2), (4, 4), (9, 4)])
def test_len(steps, length):
    assert len(GlobalBatchSampler(10, 3, steps_per_epoch=steps)) == length


# ---------------------------------------------------------------------------- loader and dataset
def test_array_loader_yields_whole_batches():
    x, y, w = torch.arange(10.0).reshape(5, 2), torch.arange(5), torch.ones(5)
    batches = list(array_loader(x, y, w, batch_size=2))
    assert len(batches) == 3
    assert [b[0].tolist() for b in batches] == [[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [6.0, 7.0]], [[8.0, 9.0]]]
    assert [b[1].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert [b[2].tolist() for b in batches] == [[1.0, 1.0], [1.0, 1.0], [1.0]]


def test_array_loader_without_targets_yields_x_alone():
    batches = list(array_loader({"a": torch.zeros(3, 2), "b": torch.ones(3)}, batch_size=2))
    assert [len(b) for b in batches] == [1, 1]
    assert batches[0][0]["a"].shape == (2, 2) and batches[1][0]["b"].shape == (1,)


def test_array_batch_dataset_indexes_structures():
    data = ArrayBatchDataset([torch.arange(4), None], {"out": torch.arange(4) * 10}, None)
    assert len(data) == 4
    x, y, w = data[torch.tensor([3, 1])]
    assert x[0].tolist() == [3, 1] and x[1] is None and y["out"].tolist() == [30, 10] and w is None


# ---------------------------------------------------------------------------- validation split
def test_validation_split_takes_the_last_fraction():
    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    (tx, ty, tw), (vx, vy, vw) = train_validation_split((x, y, None), 0.2)
    assert ty.tolist() == list(range(8)) and vy.tolist() == [8, 9]
    assert tx.tolist() == x[:8].tolist() and vx.tolist() == x[8:].tolist()
    assert tw is None and vw is None


@pytest.mark.parametrize("split", [0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 0.85, 0.05, 0.9, 0.0, 1.0])
def test_validation_split_matches_keras(split):
    x, y = np.arange(20, dtype="float32").reshape(10, 2), np.arange(10)
    try:
        expected = keras_train_validation_split((x, y), split)
    except ValueError:
        with pytest.raises(ValueError, match=f"`validation_split={split}`"):
            train_validation_split((x, y), split)
        return
    (tx, ty), (vx, vy) = train_validation_split((x, y), split)
    (ktx, kty), (kvx, kvy) = expected
    assert ty.tolist() == np.asarray(kty).tolist() and vy.tolist() == np.asarray(kvy).tolist()
    assert tx.tolist() == np.asarray(ktx).tolist() and vx.tolist() == np.asarray(kvx).tolist()


def test_validation_split_of_structures():
    x = {"a": torch.arange(4), "b": [torch.arange(4) * 2, None]}
    (tx,), (vx,) = train_validation_split((x,), 0.5)
    assert tx["a"].tolist() == [0, 1] and vx["a"].tolist() == [2, 3]
    assert tx["b"][0].tolist() == [0, 2] and vx["b"][0].tolist() == [4, 6] and vx["b"][1] is None


@pytest.mark.parametrize(("split", "split_at"), [(0.0, 10), (0.9, 0), (1.0, 0)])
def test_validation_split_refuses_an_empty_side(split, split_at):
    with pytest.raises(ValueError) as info:
        train_validation_split((np.zeros(10),), split)
    message = str(info.value)
    assert f"`validation_split={split}`" in message and f"10 samples (split index {split_at})" in message


# ---------------------------------------------------------------------------- checks
def test_check_cardinality():
    assert check_cardinality(np.zeros((4, 2)), np.zeros(4), np.ones(4)) == 4
    assert check_cardinality({"a": np.zeros(3), "b": [np.zeros((3, 1)), None]}) == 3


def test_check_cardinality_names_every_size():
    with pytest.raises(ValueError) as info:
        check_cardinality({"a": np.zeros(4), "b": np.zeros(3)}, [np.zeros(4)], np.zeros(5))
    message = str(info.value)
    assert message.startswith("Data cardinality is ambiguous")
    assert "Received x sizes: [4, 3], y sizes: [4], sample_weight sizes: [5]." in message


def test_check_cardinality_of_nothing():
    with pytest.raises(ValueError, match="`x` is empty"):
        check_cardinality([])


@pytest.mark.parametrize("batch_size", [None, 1, 32, np.int64(8)])
def test_check_batch_size_accepts(batch_size):
    check_batch_size(batch_size)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, "32", True])
def test_check_batch_size_refuses(batch_size):
    with pytest.raises(ValueError) as info:
        check_batch_size(batch_size)
    assert f"batch_size={batch_size!r}" in str(info.value)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (np.zeros(2), True),
        (torch.zeros(2), True),
        ([np.zeros(2), None], True),
        ({"a": torch.zeros(1)}, True),
        ([], False),
        ({}, False),
        ([None], True),
        ([np.zeros(2), [1, 2]], False),
        ("abc", False),
    ],
    ids=[
        "numpy",
        "torch",
        "list-with-None",
        "dict",
        "empty-list",
        "empty-dict",
        "only-None",
        "python-list-leaf",
        "string",
    ],
)
def test_is_array_structure(obj, expected):
    assert is_array_structure(obj) is expected


# ---------------------------------------------------------------------------- position (exact resume)
def _consume(sampler, epochs, then):
    """Iterate ``epochs`` whole epochs, then ``then`` batches of the next one; the sampler's state there."""
    for epoch in range(epochs):
        epoch_batches(sampler, epoch)
    sampler.set_epoch(epochs)
    it = iter(sampler)
    for _ in range(then):
        next(it)
    return sampler.state_dict()


@pytest.mark.parametrize("steps_per_epoch", [None, 3])
@pytest.mark.parametrize("shuffle", [True, "batch", False])
def test_a_restored_sampler_continues_at_the_next_batch_of_the_same_order(shuffle, steps_per_epoch):
    def fresh(seed):
        return GlobalBatchSampler(11, 2, shuffle=shuffle, seed=seed, steps_per_epoch=steps_per_epoch)

    reference = fresh(7)
    expected = [epoch_batches(reference, e) for e in range(5)]
    for epochs, then in [(0, 1), (1, 2), (2, 0), (3, 1)]:
        state = _consume(fresh(7), epochs, then)
        restored = fresh(123)  # another seed: the state brings the saved one
        restored.load_state_dict(state)
        rest = epoch_batches(restored, epochs)
        assert rest == expected[epochs][then:], (epochs, then)
        assert epoch_batches(restored, epochs + 1) == expected[epochs + 1]


def test_a_sampler_restored_at_an_epoch_end_starts_the_next_epoch():
    sampler = GlobalBatchSampler(10, 3, shuffle=True, seed=1, steps_per_epoch=3)
    reference = GlobalBatchSampler(10, 3, shuffle=True, seed=1, steps_per_epoch=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the carried-over pass runs out in epoch 1 (Keras's rule)
        expected = [epoch_batches(reference, e) for e in range(3)]
        epoch_batches(sampler, 0)
        state = dict(sampler.state_dict(), epoch_finished=True)
        restored = GlobalBatchSampler(10, 3, shuffle=True, seed=5, steps_per_epoch=3)
        restored.load_state_dict(state)
        assert [epoch_batches(restored, e) for e in (1, 2)] == expected[1:]
    assert len(expected[1]) == 1  # what was left of the pass


@pytest.mark.parametrize(
    "values",
    [
        torch.randn(50, 7),
        torch.randint(0, 9, (50,)),
        torch.randn(50, 3, 4).transpose(1, 2),  # not contiguous
        torch.rand(50, 2) > 0.5,
        torch.randn(50, 4, dtype=torch.float64),
    ],
)
def test_a_batch_holds_the_rows_advanced_indexing_gives(values):
    index = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:13]
    (x, y, sw) = ArrayBatchDataset(values, values, None)[index]
    expected = values[index]
    for batch in (x, y):
        assert batch.dtype == expected.dtype and batch.shape == expected.shape
        assert batch.is_contiguous() and torch.equal(batch, expected)
    assert sw is None
