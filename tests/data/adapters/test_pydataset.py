"""keras.utils.PyDataset on the bridge: the guide's 3.6 workload, Keras parity, hooks and order inside workers."""

import multiprocessing
import os
import time

import keras
import numpy as np
import pytest
from _pydatasets import (
    CountingPyDataset,
    ExamplePyDataset,
    FailingPyDataset,
    InfinitePyDataset,
    RecordingPyDataset,
    WeightedPyDataset,
    digits,
    digits_model,
)
from helpers import assert_history_close, twin_models
from keras import layers

import keras_bridge as kb
from keras_bridge.data.adapters import pydataset as pyd
from keras_bridge.data.adapters.pydataset import PyDatasetLoader, shard_keys
from keras_bridge.data.contract import DataOptions

MODES = {"inline": dict(), "threads": dict(workers=4), "processes": dict(workers=2, use_multiprocessing=True)}


def compile_kwargs():
    return dict(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )


def small_module(n_in=4):
    keras.utils.set_random_seed(0)
    inp = keras.Input((n_in,))
    module = kb.KerasModule(keras.Model(inp, layers.Dense(2, activation="softmax")(inp)))
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return module


# ---------------------------------------------------------------------------- guide 3.6
@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_guide_pydataset_trains_and_evaluates(mode):
    (x_train, y_train), (x_val, y_val) = digits()
    train_py_dataset = ExamplePyDataset(x_train, y_train, batch_size=32, **MODES[mode])
    val_py_dataset = ExamplePyDataset(x_val, y_val, batch_size=32, **MODES[mode])
    keras.utils.set_random_seed(0)
    module = kb.KerasModule(digits_model())
    module.compile(**compile_kwargs())
    history = module.fit(train_py_dataset, batch_size=64, validation_data=val_py_dataset, epochs=5, verbose=0)
    assert history.params["steps"] == 47
    assert history.history["val_sparse_categorical_accuracy"][-1] > 0.85
    loss, acc = module.evaluate(val_py_dataset, verbose=0)
    np.testing.assert_allclose(
        [loss, acc],
        [history.history["val_loss"][-1], history.history["val_sparse_categorical_accuracy"][-1]],
        rtol=1e-6,
    )


# ---------------------------------------------------------------------------- Keras parity
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("weighting", ["none", "class_weight", "dataset_weights"])
def test_history_matches_keras_fit(mode, weighting):
    (x, y), (x_val, y_val) = digits(n_train=480)
    w = np.where(y == 5, 2.0, 1.0) if weighting == "dataset_weights" else None
    class_weight = {5: 2.0, 3: 0.5} if weighting == "class_weight" else None
    k_model, b_model = twin_models(digits_model)
    k_model.compile(**compile_kwargs())
    module = kb.KerasModule(b_model)
    module.compile(**compile_kwargs())
    # Keras iterates its own copy inline; the bridge uses the mode under test.
    kh = k_model.fit(
        WeightedPyDataset(x, y, w, batch_size=40),
        validation_data=WeightedPyDataset(x_val[:100], y_val[:100]),
        epochs=3,
        shuffle=False,
        class_weight=class_weight,
        verbose=0,
    )
    bh = module.fit(
        WeightedPyDataset(x, y, w, batch_size=40, **MODES[mode]),
        validation_data=WeightedPyDataset(x_val[:100], y_val[:100], **MODES[mode]),
        epochs=3,
        shuffle=False,
        class_weight=class_weight,
        verbose=0,
    )
    assert_history_close(kh, bh, rtol=1e-4)


def test_hook_order_matches_keras():
    traces = []
    for runner in ("keras", "bridge"):
        train, val = RecordingPyDataset(n_batches=3), RecordingPyDataset(n_batches=2)
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        model = keras.Model(inp, layers.Dense(2, activation="softmax")(inp))
        target = model if runner == "keras" else kb.KerasModule(model)
        target.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        target.fit(train, validation_data=val, epochs=2, shuffle=False, verbose=0)
        target.evaluate(val, verbose=0)
        traces.append((train.events, val.events))
    assert traces[0] == traces[1]


# ---------------------------------------------------------------------------- order, hooks, workers
def _epochs_seen(loader, epochs):
    """Per epoch: the batch indices and the on_epoch_end count seen by whoever computed each batch."""
    seen = []
    for _ in range(epochs):
        batches = [b[0][0].tolist() for b in loader]
        seen.append(batches)
    return seen


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shuffle", [False, True])
def test_order_and_on_epoch_end_seen_inside_workers(mode, shuffle):
    ds = RecordingPyDataset(n_batches=6, **MODES[mode])
    loader = PyDatasetLoader(ds, DataOptions(shuffle=shuffle, seed=3))
    seen = _epochs_seen(loader, epochs=3)
    orders = [[int(row[0]) for row in epoch] for epoch in seen]
    for order in orders:
        assert sorted(order) == list(range(6))
    if shuffle:
        assert len({tuple(o) for o in orders}) == 3, orders  # a new permutation every epoch
    else:
        assert orders == [list(range(6))] * 3
    # on_epoch_end ran once before epoch 0 (Keras's reset) and after every epoch, and the copy that
    # computed each batch had seen exactly those calls.
    assert [{int(row[1]) for row in epoch} for epoch in seen] == [{1}, {2}, {3}]
    assert ds.epoch_ends == 4
    pids = {int(row[2]) for epoch in seen for row in epoch}
    if mode == "processes":
        assert os.getpid() not in pids
    else:
        assert pids == {os.getpid()}
    assert {row[3] for epoch in seen for row in epoch} == ({1.0} if mode == "threads" else {0.0})


@pytest.mark.slow
def test_on_epoch_end_seen_by_spawned_workers(monkeypatch):
    # spawn starts a fresh interpreter per worker per epoch (imports torch and keras): ~10 s.
    monkeypatch.setattr(pyd, "MULTIPROCESSING_CONTEXT", "spawn")
    ds = RecordingPyDataset(n_batches=2, workers=1, use_multiprocessing=True)
    seen = _epochs_seen(PyDatasetLoader(ds), epochs=2)
    assert [{int(row[1]) for row in epoch} for epoch in seen] == [{1}, {2}]
    assert os.getpid() not in {int(row[2]) for epoch in seen for row in epoch}


def test_threads_overlap_io_bound_batches():
    def epoch_seconds(**kwargs):
        loader = PyDatasetLoader(RecordingPyDataset(n_batches=8, delay=0.05, **kwargs))
        start = time.perf_counter()
        assert len(list(loader)) == 8
        return time.perf_counter() - start

    assert epoch_seconds(workers=4) < epoch_seconds() / 2  # ~0.1 s against ~0.4 s


@pytest.mark.parametrize("mode", list(MODES))
def test_steps_per_epoch_carries_over(mode):
    ds = RecordingPyDataset(n_batches=5, **MODES[mode])
    loader = PyDatasetLoader(ds, DataOptions(steps=2))
    with pytest.warns(UserWarning, match="ran out of data after 1 of steps_per_epoch=2"):
        seen = _epochs_seen(loader, epochs=3)
    assert [[int(r[0]) for r in e] for e in seen] == [[0, 1], [2, 3], [4]]  # keras-semantics surprise 13
    assert len(loader) == 2
    even = PyDatasetLoader(RecordingPyDataset(n_batches=4, **MODES[mode]), DataOptions(steps=2))
    assert [[int(r[0]) for r in e] for e in _epochs_seen(even, epochs=3)] == [[0, 1], [2, 3], [0, 1]]


@pytest.mark.parametrize("mode", list(MODES))
def test_infinite_pydataset_keeps_counting(mode):
    loader = PyDatasetLoader(InfinitePyDataset(**MODES[mode]), DataOptions(steps=3))
    seen = [[int(b[0][0, 0]) for b in loader] for _ in range(2)]
    assert seen == [[0, 1, 2], [3, 4, 5]]


def test_fit_steps_per_epoch_and_infinite_dataset():
    module = small_module()
    ds = InfinitePyDataset()
    history = module.fit(ds, epochs=3, steps_per_epoch=4, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3
    assert history.params["steps"] == 4
    finite = RecordingPyDataset(n_batches=5)
    with pytest.warns(UserWarning, match="ran out of data"):
        small_module().fit(finite, epochs=3, steps_per_epoch=2, shuffle=False, verbose=0)
    fetched = [e[1] for e in finite.events if isinstance(e, tuple)]
    assert fetched == [0, 0, 1, 2, 3, 4]  # the build peek, then {0,1}, {2,3}, {4}


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_max_queue_size_bounds_batches_in_flight(mode):
    counter = multiprocessing.get_context("fork").Value("i", 0)
    ds = CountingPyDataset(
        counter, n_batches=40, workers=2, use_multiprocessing=(mode == "processes"), max_queue_size=4
    )
    monkey = pyd.MULTIPROCESSING_CONTEXT
    pyd.MULTIPROCESSING_CONTEXT = "fork"
    try:
        it = iter(PyDatasetLoader(ds))
        consumed = 0
        for _ in range(10):
            next(it)
            consumed += 1
            time.sleep(0.02)  # a slow consumer: the producers would run ahead without a bound
            assert counter.value - consumed <= 4, (counter.value, consumed)
        it.close()
    finally:
        pyd.MULTIPROCESSING_CONTEXT = monkey


# ---------------------------------------------------------------------------- errors
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", list(MODES))
def test_getitem_error_names_index_and_keeps_traceback(mode):
    module = small_module()
    ds = FailingPyDataset(fail_at=3, **MODES[mode])
    with pytest.raises(ValueError, match=r"FailingPyDataset.__getitem__\(3\)") as info:
        module.fit(ds, epochs=1, shuffle=False, verbose=0)
    exc = info.value
    text = str(exc) + "".join(__import__("traceback").format_exception(type(exc), exc, exc.__traceback__))
    assert "corrupt record in batch 3" in text
    assert "decode_record" in text  # the frame that raised, from wherever it ran


@pytest.mark.parametrize("index", [0, 3])
def test_wrong_arity_names_batch_index(index):
    module = small_module()
    weights = [w.copy() for w in module.model.get_weights()]
    with pytest.raises(ValueError, match=rf"__getitem__\({index}\).*length 4"):
        module.fit(FailingPyDataset(bad_arity_at=index), epochs=1, shuffle=False, verbose=0)
    if index == 0:  # found by the build peek: nothing was trained
        for a, b in zip(weights, module.model.get_weights()):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("argument", ["y", "sample_weight"])
def test_y_or_sample_weight_with_a_dataset_is_refused(argument):
    module = small_module()
    with pytest.raises(ValueError, match=f"`{argument}` must not be given when `x` is a dataset"):
        module.fit(FailingPyDataset(), **{argument: np.zeros(12)}, verbose=0)


def test_validation_split_with_a_dataset_is_refused():
    with pytest.raises(ValueError, match="validation_split"):
        small_module().fit(FailingPyDataset(), validation_split=0.2, verbose=0)


def test_class_weight_with_weighted_batches_is_refused():
    ds = WeightedPyDataset(np.zeros((8, 4), "float32"), np.zeros(8, "int64"), np.ones(8), batch_size=4)
    with pytest.raises(ValueError, match=r"__getitem__\(0\).*class_weight"):
        small_module().fit(ds, class_weight={0: 2.0}, verbose=0)


# ---------------------------------------------------------------------------- DDP sharding (pure)
def test_shard_keys_give_every_process_the_same_count_without_duplicates():
    order = [4, 1, 0, 3, 2]
    shards = [shard_keys(order, r, 2) for r in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    real = sorted(i for s in shards for i, empty in s if not empty)
    assert real == [0, 1, 2, 3, 4]
    assert [empty for s in shards for _, empty in s].count(True) == 1


@pytest.mark.parametrize("steps_per_epoch", [None, 4])
def test_a_restored_loader_continues_at_the_next_batch_of_the_same_order(steps_per_epoch):
    import warnings

    def fresh(seed):
        return PyDatasetLoader(
            RecordingPyDataset(n_batches=6), DataOptions(shuffle=True, seed=seed, steps=steps_per_epoch)
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # steps_per_epoch=4 of 6 batches runs out every other epoch
        expected = _epochs_seen(fresh(3), epochs=4)
        for epochs, then in [(0, 2), (1, 1), (2, 3)]:
            loader = fresh(3)
            _epochs_seen(loader, epochs)
            it = iter(loader)
            for _ in range(then):
                next(it)
            state = loader.state_dict()
            restored = fresh(99)
            restored.load_state_dict(state)
            rest = _indices(_epochs_seen(restored, epochs=4 - epochs))
            assert rest[0] == _indices(expected)[epochs][then:], (epochs, then)
            assert rest[1:] == _indices(expected)[epochs + 1 :], (epochs, then)


def _indices(epochs):
    return [[int(record[0]) for record in batches] for batches in epochs]
