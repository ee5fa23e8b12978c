"""Every input kind Keras's ``fit`` takes, against ``keras.Model.fit`` itself on the same data and weights.

pandas ``DataFrame`` / ``Series``, ``ml_dtypes`` arrays (bfloat16), a dict ``x`` for a model built on a dict of
unnamed inputs, generators, and, when the frameworks are installed, ``tf.data.Dataset`` and JAX / TensorFlow
arrays (those tests skip cleanly otherwise). Each test trains one twin with Keras and one with the bridge and
compares History, weights and evaluate/predict results.
"""

import warnings

import keras
import ml_dtypes
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_history_close, twin_models
from keras import layers

import keras_bridge as kb

RTOL = 1e-4


def mlp(n_in=4, n_out=1):
    def build():
        inp = keras.Input((n_in,))
        hidden = layers.Dense(8, activation="tanh")(inp)
        return keras.Model(inp, layers.Dense(n_out)(hidden))

    return build


def compile_both(k_model, b_model, **extra):
    kwargs = lambda: dict(optimizer=keras.optimizers.SGD(0.05), loss="mse", metrics=["mae"], **extra)  # noqa: E731
    k_model.compile(**kwargs())
    module = kb.KerasModule(b_model)
    module.compile(**kwargs())
    return module


def assert_weights_close(k_model, b_model):
    for kw, bw in zip(k_model.get_weights(), b_model.get_weights()):
        np.testing.assert_allclose(bw, kw, rtol=RTOL, atol=1e-6)


def frame(n=40, seed=0):
    rng = np.random.default_rng(seed)
    # Columns not in alphabetical order, mixed dtypes: Keras reads them in the frame's order, as floatx.
    df = pd.DataFrame({"z": rng.normal(size=n), "a": rng.integers(0, 5, size=n), "m": rng.normal(size=n),
                       "b": rng.normal(size=n).astype("float32")})  # fmt: skip
    y = pd.Series(rng.normal(size=n), name="target")
    return df, y


def test_pandas_fit_evaluate_predict_and_validation_split_match_keras():
    df, y = frame()
    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=8, epochs=2, validation_split=0.25, shuffle=False, verbose=0)
    assert_history_close(k_model.fit(df, y, **fit), module.fit(df, y, **fit), rtol=RTOL)
    assert_weights_close(k_model, b_model)
    np.testing.assert_allclose(
        module.evaluate(df, y, verbose=0), k_model.evaluate(df, y, verbose=0), rtol=RTOL, atol=1e-6
    )
    np.testing.assert_allclose(module.predict(df, verbose=0), k_model.predict(df, verbose=0), rtol=RTOL, atol=1e-6)


def test_pandas_series_as_x_is_one_column():
    _, y = frame()
    x = pd.Series(np.linspace(-1, 1, len(y)))
    k_model, b_model = twin_models(mlp(n_in=1))
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=10, epochs=1, shuffle=False, verbose=0)
    assert_history_close(k_model.fit(x, y, **fit), module.fit(x, y, **fit), rtol=RTOL)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_ml_dtypes_arrays_train_as_keras(dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 4)).astype(dtype)
    y = rng.normal(size=(32, 1)).astype(dtype)
    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert_history_close(k_model.fit(x, y, **fit), module.fit(x, y, **fit), rtol=1e-3, atol=1e-4)


def dict_model():
    inputs = {name: keras.Input((3,)) for name in ("query", "key", "value")}  # unnamed: generated layer names
    merged = layers.Concatenate()([inputs["query"], inputs["key"] * 2.0, inputs["value"] * 3.0])
    return keras.Model(inputs, layers.Dense(1)(merged))


@pytest.mark.filterwarnings("ignore:When providing `inputs` as a dict")  # Keras's own, for unnamed inputs
def test_dict_x_matches_the_input_structure_keys():
    rng = np.random.default_rng(2)
    x = {name: rng.normal(size=(24, 3)).astype("float32") for name in ("value", "query", "key")}
    y = rng.normal(size=(24, 1)).astype("float32")
    k_model, b_model = twin_models(dict_model)
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=6, epochs=2, shuffle=False, verbose=0)
    assert_history_close(k_model.fit(x, y, **fit), module.fit(x, y, **fit), rtol=RTOL)
    np.testing.assert_allclose(module.predict(x, verbose=0), k_model.predict(x, verbose=0), rtol=RTOL, atol=1e-6)
    with pytest.raises(ValueError, match="value"):
        module.evaluate({"query": x["query"], "key": x["key"]}, y, verbose=0)


def batches(n_batches=6, batch=4, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(batch, 4)).astype("float32"), rng.normal(size=(batch, 1)).astype("float32"))
            for _ in range(n_batches)]  # fmt: skip


def test_generator_with_steps_per_epoch_matches_keras():
    """A generator is read on across epochs with ``steps_per_epoch`` (Keras's rule)."""
    data = batches()
    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    fit = dict(epochs=3, steps_per_epoch=2, verbose=0)
    kh = k_model.fit((b for b in data), **fit)
    bh = module.fit((b for b in data), **fit)
    assert_history_close(kh, bh, rtol=RTOL)
    assert_weights_close(k_model, b_model)


# --------------------------------------------------------------------------- other frameworks' data
def _tf():
    return pytest.importorskip("tensorflow")


def tf_dataset(with_weights=False, as_dict=False):
    tf = _tf()
    rng = np.random.default_rng(4)
    x = rng.normal(size=(24, 4)).astype("float32")
    y = rng.normal(size=(24, 1)).astype("float32")
    sw = rng.uniform(0.5, 2.0, size=(24,)).astype("float32")
    if as_dict:
        return tf.data.Dataset.from_tensor_slices(({"features": x}, y)).batch(6)
    elements = (x, y, sw) if with_weights else (x, y)
    return tf.data.Dataset.from_tensor_slices(elements).batch(6)


@pytest.mark.parametrize(
    "case", ["fit_evaluate", "steps_per_epoch", "validation_data", "sample_weight", "dict"], ids=str
)
def test_tf_data_matches_keras(case):
    dataset = tf_dataset(with_weights=case == "sample_weight", as_dict=case == "dict")
    if case == "dict":
        build = lambda: keras.Model(  # noqa: E731
            {"features": (inp := keras.Input((4,), name="features"))}, layers.Dense(1)(inp)
        )
    else:
        build = mlp()
    k_model, b_model = twin_models(build)
    module = compile_both(k_model, b_model)
    fit = dict(epochs=2, verbose=0)
    if case == "steps_per_epoch":
        fit.update(steps_per_epoch=3, epochs=3)
        dataset = dataset.repeat()
    if case == "validation_data":
        fit.update(validation_data=tf_dataset())
    assert_history_close(k_model.fit(dataset, **fit), module.fit(dataset, **fit), rtol=RTOL)
    assert_weights_close(k_model, b_model)
    if case in ("fit_evaluate", "sample_weight", "dict"):
        np.testing.assert_allclose(
            module.evaluate(dataset, verbose=0), k_model.evaluate(dataset, verbose=0), rtol=RTOL, atol=1e-6
        )


@pytest.mark.parametrize("framework", ["jax", "tensorflow"])
def test_other_frameworks_arrays_match_keras(framework):
    rng = np.random.default_rng(5)
    x_np = rng.normal(size=(20, 4)).astype("float32")
    y_np = rng.normal(size=(20, 1)).astype("float32")
    if framework == "jax":
        jnp = pytest.importorskip("jax.numpy")
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    else:
        tf = _tf()
        x, y = tf.constant(x_np), tf.constant(y_np)
    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=5, epochs=2, shuffle=False, verbose=0)
    # Keras reads them through NumPy too: the NumPy twin is its reference.
    assert_history_close(k_model.fit(x_np, y_np, **fit), module.fit(x, y, **fit), rtol=RTOL)
    np.testing.assert_allclose(module.predict(x, verbose=0), k_model.predict(x_np, verbose=0), rtol=RTOL, atol=1e-6)


def test_validation_data_as_a_list_is_unpacked_as_keras_does():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(24, 4)).astype("float32"), rng.normal(size=(24, 1)).astype("float32")
    x_val, y_val = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 1)).astype("float32")
    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0, validation_data=[x_val, y_val])
    assert_history_close(k_model.fit(x, y, **fit), module.fit(x, y, **fit), rtol=RTOL)


def test_validation_data_of_four_elements_is_refused_before_training():
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 1), "float32")
    module = kb.KerasModule(mlp()())
    module.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"`validation_data` to be a tuple .*Data is expected to be in format"):
        module.fit(x, y, validation_data=(x, y, None, None), verbose=0)
    assert module.history is None


class _DtypeProbe(keras.layers.Layer):
    """Passes its input through unchanged (``autocast=False``) and records the dtype it was called with."""

    def __init__(self, **kwargs):
        super().__init__(autocast=False, **kwargs)
        self.seen = set()

    def call(self, x):
        self.seen.add(keras.backend.standardize_dtype(x.dtype))
        return x


class _ProbedModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.probe = _DtypeProbe()
        self.dense = layers.Dense(1)

    def call(self, x):
        return self.dense(self.probe(x))


def test_float16_arrays_reach_the_model_as_floatx_as_in_keras():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(16, 4)).astype(np.float16), rng.normal(size=(16, 1)).astype(np.float16)
    k_model, b_model = twin_models(lambda: _ProbedModel())
    for model in (k_model, b_model):
        model(np.zeros((1, 4), "float32"))  # builds the subclassed model's weights
        model.probe.seen = set()
    b_model.set_weights(k_model.get_weights())
    module = compile_both(k_model, b_model)
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert_history_close(k_model.fit(x, y, **fit), module.fit(x, y, **fit), rtol=RTOL)
    assert b_model.probe.seen == k_model.probe.seen == {keras.config.floatx()}


def test_a_torch_module_trains_on_float16_arrays_as_on_their_floatx_copy():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 4)).astype(np.float16), rng.normal(size=(16, 1)).astype(np.float16)
    histories = []
    for data in ((x, y), (x.astype(np.float32), y.astype(np.float32))):  # what Keras's array adapter feeds
        torch.manual_seed(0)
        module = kb.KerasModule(torch.nn.Linear(4, 1))
        module.compile(optimizer="sgd", loss="mse")
        histories.append(module.fit(*data, batch_size=8, epochs=2, shuffle=False, verbose=0))
    assert_history_close(histories[1], histories[0], rtol=0, atol=0)


def _shuffle_warnings(record):
    return [str(w.message) for w in record if "`shuffle=True` was passed" in str(w.message)]


@pytest.mark.parametrize("kind", ["generator", "dataloader"])
def test_shuffle_ignored_warnings_match_keras(kind):
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 1), "float32")

    def data():
        if kind == "generator":
            return ((x[i : i + 4], y[i : i + 4]) for i in (0, 4))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), 4)

    k_model, b_model = twin_models(mlp())
    module = compile_both(k_model, b_model)
    with pytest.warns(UserWarning) as keras_record:
        k_model.fit(data(), epochs=1, verbose=0)
    with pytest.warns(UserWarning) as bridge_record:
        module.fit(data(), epochs=1, verbose=0)
    assert _shuffle_warnings(bridge_record) == _shuffle_warnings(keras_record) != []
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        module.fit(data(), epochs=1, verbose=0, shuffle=False)
    assert _shuffle_warnings(quiet) == []
