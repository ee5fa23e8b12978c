"""HDF5 datasets are read a batch at a time, and train exactly as the same arrays in memory."""

import h5py
import numpy as np
import pytest
import torch

import keras_bridge as kb
from keras_bridge.data.batches import check_values
from keras_bridge.data.lazy_rows import LazyRows


@pytest.fixture
def h5_file(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f["x"] = rng.normal(size=(100, 4)).astype("float64")  # float64: fed as float32, as Keras feeds floatx
        f["y"] = rng.integers(0, 3, size=100)
    with h5py.File(tmp_path / "data.h5", "r") as f:
        yield f


@pytest.mark.parametrize(
    "index", [[3, 4, 5, 6], [6, 3, 5, 4], [90, 2, 41, 2, 7], []], ids=["block", "block-shuffled", "scattered", "empty"]
)
def test_rows_read_as_numpy_indexes(h5_file, index):
    rows, expected = LazyRows(h5_file["x"]), h5_file["x"][:]
    got = rows[torch.tensor(index, dtype=torch.long)]
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), expected[index].astype("float32"))
    np.testing.assert_array_equal(rows[10:20][torch.tensor([9, 0])].numpy(), expected[[19, 10]].astype("float32"))


def test_input_check_streams_and_names_the_sample(h5_file, tmp_path):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        data = np.ones((50, 3), dtype="float32")
        data[37, 1] = np.nan
        f["x"] = data
    with h5py.File(tmp_path / "bad.h5", "r") as f:
        rows = LazyRows(f["x"])
        assert [offset for offset, _ in rows.iter_chunks(16)] == [0, 16, 32, 48]
        with pytest.raises(ValueError, match=r"with 1 NaN or infinite value\(s\), the first at sample 37: nan"):
            check_values(x=rows)


@pytest.mark.parametrize("shuffle", ["batch", True])
def test_fit_on_h5_equals_fit_in_memory(h5_file, shuffle):
    def fit(x, y):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        module = kb.KerasModule(net)
        module.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        history = module.fit(x, y, batch_size=16, epochs=2, shuffle=shuffle, validation_split=0.2,
                             class_weight={0: 1.0, 1: 2.0, 2: 0.5}, verbose=0)  # fmt: skip
        return history.history, [p.detach().clone() for p in net.parameters()]

    lazy_history, lazy_weights = fit(h5_file["x"], h5_file["y"])
    history, weights = fit(h5_file["x"][:], h5_file["y"][:])
    assert lazy_history == history
    for a, b in zip(lazy_weights, weights):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
