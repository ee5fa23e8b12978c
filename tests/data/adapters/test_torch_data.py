"""torch Dataset / DataLoader and iterables of batches as fit input: the guide's 3.7, weights for every kind."""

import warnings

import keras
import numpy as np
import pytest
import torch
from _pydatasets import ExampleTorchDataset, SampleDataset, WeightedPyDataset, digits, digits_model
from helpers import assert_history_close
from keras import layers

import keras_bridge as kb
from keras_bridge.data.adapters.torch_data import WrappedDataLoader
from keras_bridge.data.contract import DataOptions

N, BS = 200, 40


def mlp():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(32, activation="relu")(inputs)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="predictions")(x))


def make_module(seed=0, build=mlp):
    keras.utils.set_random_seed(seed)
    module = kb.KerasModule(build())
    module.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
        weighted_metrics=["sparse_categorical_accuracy"],
    )
    return module


class Batches:
    """A re-iterable of batches with no ``__len__`` (a list of tuples would read as multi-input arrays)."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def batches(x, y, w):
    out = []
    for i in range(0, len(x), BS):
        s = slice(i, i + BS)
        out.append((x[s], y[s]) if w is None else (x[s], y[s], w[s]))
    return Batches(out)


def as_kind(kind, x, y, w):
    """The same batches of BS samples, as the given input kind."""
    if kind == "pydataset":
        return WeightedPyDataset(x, y, w, batch_size=BS)
    if kind == "torch_dataset":
        return SampleDataset(torch.from_numpy(x), torch.from_numpy(y), None if w is None else torch.from_numpy(w))
    if kind == "dataloader":
        return torch.utils.data.DataLoader(SampleDataset(x, y, w), batch_size=BS, shuffle=False)
    if kind == "iterable":
        return batches(x, y, w)
    raise AssertionError(kind)


KINDS = ["pydataset", "torch_dataset", "dataloader", "iterable"]


# ---------------------------------------------------------------------------- guide 3.7
def test_guide_torch_dataloader_trains_and_evaluates():
    (x_train, y_train), (x_val, y_val) = digits()
    train_torch_dataset = ExampleTorchDataset(x_train, y_train)
    val_torch_dataset = ExampleTorchDataset(x_val, y_val)
    train_dataloader = torch.utils.data.DataLoader(train_torch_dataset, batch_size=32, shuffle=True)
    val_dataloader = torch.utils.data.DataLoader(val_torch_dataset, batch_size=32, shuffle=True)
    module = make_module(build=digits_model)
    history = module.fit(train_dataloader, batch_size=64, validation_data=val_dataloader, epochs=5, verbose=0)
    assert history.params["steps"] == 47
    assert history.history["val_sparse_categorical_accuracy"][-1] > 0.85
    results = module.evaluate(val_dataloader, verbose=0, return_dict=True)
    for key, value in results.items():
        np.testing.assert_allclose(value, history.history[f"val_{key}"][-1], rtol=1e-5)


# ---------------------------------------------------------------------------- weights, every kind
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weighting", ["dataset_weights", "class_weight"])
def test_weighted_dataset_matches_array_form(kind, weighting):
    (x, y), (x_val, y_val) = digits(n_train=N)
    w = np.where(y == 5, 2.0, 1.0).astype("float64") if weighting == "dataset_weights" else None
    class_weight = {5: 2.0, 3: 0.5} if weighting == "class_weight" else None
    fit = dict(epochs=2, shuffle=False, verbose=0, validation_data=(x_val[:80], y_val[:80]), class_weight=class_weight)
    expected = make_module().fit(x, y, sample_weight=w, batch_size=BS, **fit)
    got = make_module().fit(as_kind(kind, x, y, w), batch_size=BS, **fit)
    assert_history_close(expected, got, rtol=1e-5)


def test_torch_dataset_is_batched_by_batch_size_and_shuffled_per_sample():
    x = np.arange(10, dtype="float32").reshape(10, 1)
    ds = SampleDataset(x, np.zeros(10, "int64"))
    loader = kb.data.to_dataloader(ds, batch_size=4, shuffle=True)
    assert len(loader) == 3
    epochs = [np.concatenate([b[0][:, 0].numpy() for b in loader]).tolist() for _ in range(2)]
    assert [sorted(e) for e in epochs] == [list(range(10))] * 2
    assert epochs[0] != epochs[1]
    assert [len(b[0]) for b in loader] == [4, 4, 2]


def test_generator_of_batches_has_unknown_length_and_loses_no_batch():
    (x, y), _ = digits(n_train=N)
    expected = make_module().fit(x, y, batch_size=BS, shuffle=False, verbose=0)
    got = make_module().fit((b for b in batches(x, y, None).items), verbose=0)
    assert got.params["steps"] is None  # Keras's "Unknown" progress bar
    assert_history_close(expected, got, rtol=1e-5)


@pytest.mark.parametrize(
    "n_samples, expected",
    [
        (10, [[0, 1], [2, 3], [4], [0, 1]]),  # 5 batches: the third epoch runs out (with a warning)
        (8, [[0, 1], [2, 3], [0, 1], [2, 3]]),  # 4 batches: every epoch full, a new pass after two
    ],
)
def test_dataloader_steps_per_epoch_carries_over(n_samples, expected):
    ds = torch.utils.data.TensorDataset(
        torch.arange(float(n_samples)).reshape(-1, 1), torch.zeros(n_samples, dtype=torch.long)
    )
    loader = WrappedDataLoader(torch.utils.data.DataLoader(ds, batch_size=2), DataOptions(steps=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = [[int(b[0][0, 0]) // 2 for b in loader] for _ in range(4)]
    assert seen == expected
    assert any("ran out of data" in str(w.message) for w in caught) == (n_samples == 10)


@pytest.mark.parametrize("kind", KINDS)
def test_predict_and_evaluate_match_arrays(kind):
    (x, y), _ = digits(n_train=N)
    module = make_module()
    module.fit(x, y, batch_size=BS, epochs=1, verbose=0)
    np.testing.assert_allclose(
        module.predict(as_kind(kind, x, y, None), verbose=0), module.predict(x, verbose=0), rtol=1e-6
    )
    np.testing.assert_allclose(
        module.evaluate(as_kind(kind, x, y, None), verbose=0),
        module.evaluate(x, y, batch_size=BS, verbose=0),
        rtol=1e-6,
    )


def test_float64_batches_reach_the_model_as_float32():
    (x, y), _ = digits(n_train=N)
    got = make_module().fit(batches(x.astype("float64"), y, None), epochs=1, verbose=0)
    expected = make_module().fit(x, y, batch_size=BS, shuffle=False, epochs=1, verbose=0)
    assert_history_close(expected, got, rtol=1e-5)


# ---------------------------------------------------------------------------- errors
def test_dataloader_batch_of_wrong_arity_names_the_batch():
    data = Batches(
        [(np.zeros((2, 64), "float32"), np.zeros(2, "int64"))] * 2
        + [tuple(np.zeros((2, 64), "float32") for _ in range(4))]
    )
    with pytest.raises(ValueError, match=r"batch 2 of the Batches .*tuple of length 4"):
        make_module().fit(data, verbose=0)


def test_torch_dataset_error_names_the_samples():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise KeyError("missing image 5")
            return np.zeros(64, "float32"), 0

    with pytest.raises(KeyError, match=r"samples \[4, 5, 6, 7\]") as info:
        make_module().fit(Broken(), batch_size=4, shuffle=False, verbose=0)
    assert "missing image 5" in str(info.value.__cause__)


def test_unsupported_input_is_refused_naming_x():
    with pytest.raises(TypeError, match="Received: x of type int"):
        make_module().fit(3, verbose=0)
