"""KerasModule.fit/evaluate against keras.Model.fit/evaluate (torch backend), same weights and batches."""

import keras
import numpy as np
import pytest
from helpers import assert_history_close, twin_models
from keras import layers

import keras_bridge as kb

RTOL = 1e-4


def mlp(n_in=8, n_out=4, activation="softmax", regularizer=None):
    def build():
        inp = keras.Input((n_in,), name="features")
        x = layers.Dense(16, activation="relu", kernel_regularizer=regularizer)(inp)
        out = layers.Dense(n_out, activation=activation, name="predictions")(x)
        return keras.Model(inp, out)

    return build


def data(n=96, n_in=8, n_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype("float32")
    y = rng.integers(0, n_classes, size=(n,)).astype("int64")
    return x, y


def run_both(build, compile_kwargs, fit_kwargs, eval_kwargs=None):
    """Train the same model with Keras and with the bridge; return both histories and evaluations."""
    k_model, b_model = twin_models(build)
    k_model.compile(**compile_kwargs())
    module = kb.KerasModule(b_model)
    module.compile(**compile_kwargs())
    kh = k_model.fit(verbose=0, shuffle=False, **fit_kwargs)
    bh = module.fit(verbose=0, shuffle=False, **fit_kwargs)
    eval_kwargs = eval_kwargs or {}
    ke = k_model.evaluate(verbose=0, **eval_kwargs) if eval_kwargs else None
    be = module.evaluate(verbose=0, **eval_kwargs) if eval_kwargs else None
    return kh, bh, ke, be, k_model, b_model


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: keras.optimizers.RMSprop(learning_rate=1e-2),
    "rmsprop_string": lambda: "rmsprop",
    "adam": lambda: keras.optimizers.Adam(learning_rate=1e-2),
    "adamw_clip": lambda: keras.optimizers.AdamW(learning_rate=1e-2, clipnorm=0.5),
}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_optimizer_parity(opt):
    x, y = data()
    compile_kwargs = lambda: dict(  # noqa: E731
        optimizer=OPTIMIZERS[opt](),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)],
    )
    kh, bh, ke, be, km, bm = run_both(
        mlp(),
        compile_kwargs,
        dict(x=x, y=y, batch_size=20, epochs=3, validation_split=0.25),
        dict(x=x, y=y, batch_size=32),
    )
    assert_history_close(kh, bh, RTOL)
    np.testing.assert_allclose(be, ke, rtol=RTOL)
    for wk, wb in zip(km.get_weights(), bm.get_weights()):
        np.testing.assert_allclose(wb, wk, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("weighting", ["class_weight", "sample_weight", "weighted_metrics"])
def test_weight_parity(weighting):
    x, y = data(n=90)
    fit_kwargs = dict(x=x, y=y, batch_size=16, epochs=2, validation_data=(x[:30], y[:30]))
    metrics_kwargs = dict(metrics=["acc"])
    if weighting == "class_weight":
        fit_kwargs["class_weight"] = {0: 1.0, 1: 2.0, 2: 0.5, 3: 3.0}
    else:
        w = np.linspace(0.0, 2.0, len(x)).astype("float32")
        fit_kwargs["sample_weight"] = w
        fit_kwargs["validation_data"] = (x[:30], y[:30], w[:30])
    if weighting == "weighted_metrics":
        metrics_kwargs["weighted_metrics"] = ["acc", "sparse_categorical_crossentropy"]
    compile_kwargs = lambda: dict(
        optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", **metrics_kwargs
    )  # noqa: E731
    kh, bh, ke, be, _, _ = run_both(mlp(), compile_kwargs, fit_kwargs, dict(x=x, y=y, return_dict=True))
    assert_history_close(kh, bh, RTOL)
    assert be.keys() == ke.keys()
    np.testing.assert_allclose(list(be.values()), list(ke.values()), rtol=RTOL)


def two_io_model():
    image_input = keras.Input(shape=(8, 8, 3), name="img_input")
    timeseries_input = keras.Input(shape=(None, 5), name="ts_input")
    x1 = layers.Conv2D(3, 3)(image_input)
    x1 = layers.GlobalMaxPooling2D()(x1)
    x2 = layers.Conv1D(3, 3)(timeseries_input)
    x2 = layers.GlobalMaxPooling1D()(x2)
    x = layers.concatenate([x1, x2])
    score_output = layers.Dense(1, name="score_output")(x)
    class_output = layers.Dense(5, activation="softmax", name="class_output")(x)
    return keras.Model(inputs=[image_input, timeseries_input], outputs=[score_output, class_output])


def two_io_data(n=40):
    rng = np.random.default_rng(1)
    img = rng.random((n, 8, 8, 3)).astype("float32")
    ts = rng.random((n, 6, 5)).astype("float32")
    score = rng.random((n, 1)).astype("float32")
    cls = np.eye(5, dtype="float32")[rng.integers(0, 5, n)]
    return img, ts, score, cls


STRUCTURES = {
    "lists": lambda: dict(
        loss=[keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()],
        metrics=[
            [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            [keras.metrics.CategoricalAccuracy()],
        ],
        loss_weights=[2.0, 1.0],
    ),
    "dicts": lambda: dict(
        loss={"score_output": keras.losses.MeanSquaredError(), "class_output": keras.losses.CategoricalCrossentropy()},
        metrics={
            "score_output": [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            "class_output": [keras.metrics.CategoricalAccuracy()],
        },
        loss_weights={"score_output": 2.0, "class_output": 1.0},
    ),
    "strings_and_none": lambda: dict(loss=[None, "categorical_crossentropy"], metrics=[["mae"], ["accuracy"]]),
}


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("data_form", ["list", "dict"])
def test_multi_io_parity(structure, data_form):
    img, ts, score, cls = two_io_data()
    if data_form == "list":
        x, y = [img, ts], [score, cls]
    else:
        x, y = {"img_input": img, "ts_input": ts}, {"score_output": score, "class_output": cls}
    compile_kwargs = lambda: dict(optimizer=keras.optimizers.RMSprop(1e-3), **STRUCTURES[structure]())  # noqa: E731
    kh, bh, ke, be, _, _ = run_both(
        two_io_model,
        compile_kwargs,
        dict(x=x, y=y, batch_size=16, epochs=2, validation_split=0.25),
        dict(x=x, y=y, batch_size=16),
    )
    assert_history_close(kh, bh, RTOL)
    np.testing.assert_allclose(be, ke, rtol=RTOL)


SCHEDULES = {
    "exponential": lambda: keras.optimizers.schedules.ExponentialDecay(
        0.1, decay_steps=3, decay_rate=0.5, staircase=True
    ),
    "piecewise": lambda: keras.optimizers.schedules.PiecewiseConstantDecay([4, 8], [0.1, 0.05, 0.01]),
    "polynomial": lambda: keras.optimizers.schedules.PolynomialDecay(
        0.1, decay_steps=10, end_learning_rate=0.01, power=2.0
    ),
    "inverse_time": lambda: keras.optimizers.schedules.InverseTimeDecay(0.1, decay_steps=2, decay_rate=0.5),
    "cosine": lambda: keras.optimizers.schedules.CosineDecay(
        0.01, decay_steps=8, alpha=0.1, warmup_target=0.1, warmup_steps=3
    ),
    "cosine_restarts": lambda: keras.optimizers.schedules.CosineDecayRestarts(
        0.1, first_decay_steps=3, t_mul=2.0, m_mul=0.5
    ),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedule_parity(schedule):
    x, y = data(n=64)
    compile_kwargs = lambda: dict(  # noqa: E731
        optimizer=keras.optimizers.SGD(learning_rate=SCHEDULES[schedule](), momentum=0.5),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    kh, bh, ke, be, km, bm = run_both(mlp(), compile_kwargs, dict(x=x, y=y, batch_size=16, epochs=4), dict(x=x, y=y))
    assert_history_close(kh, bh, RTOL)
    np.testing.assert_allclose(be, ke, rtol=RTOL)


def test_regularizer_and_binary_accuracy_parity():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (rng.random((64, 1)) > 0.5).astype("float32")
    compile_kwargs = lambda: dict(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", "mse"])  # noqa: E731
    kh, bh, ke, be, _, _ = run_both(
        mlp(n_out=1, activation="sigmoid", regularizer=keras.regularizers.L2(0.01)),
        compile_kwargs,
        dict(x=x, y=y, batch_size=10, epochs=3, validation_split=0.2),
        dict(x=x, y=y),
    )
    assert_history_close(kh, bh, RTOL)
    np.testing.assert_allclose(be, ke, rtol=RTOL)


def test_steps_per_epoch_and_initial_epoch_parity():
    x, y = data(n=50)
    compile_kwargs = lambda: dict(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")  # noqa: E731
    kh, bh, _, _, _, _ = run_both(
        mlp(), compile_kwargs, dict(x=x, y=y, batch_size=8, epochs=4, steps_per_epoch=3, initial_epoch=1)
    )
    assert kh.epoch == bh.epoch == [1, 2, 3]
    assert_history_close(kh, bh, RTOL)


def test_validation_freq_list_parity():
    x, y = data(n=40)
    compile_kwargs = lambda: dict(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["acc"])  # noqa: E731
    kh, bh, _, _, _, _ = run_both(
        mlp(), compile_kwargs, dict(x=x, y=y, batch_size=8, epochs=4, validation_split=0.25, validation_freq=[2, 4])
    )
    assert len(bh.history["val_loss"]) == 2
    assert_history_close(kh, bh, RTOL)


def test_consecutive_fits_keep_optimizer_state_like_keras():
    """Keras keeps one optimizer per compile: momentum and the schedule step carry over between fits."""
    x, y = data(n=48)
    schedule = lambda: keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)  # noqa: E731
    k_model, b_model = twin_models(mlp())
    compile_kwargs = lambda: dict(
        optimizer=keras.optimizers.SGD(schedule(), momentum=0.9), loss="sparse_categorical_crossentropy"
    )  # noqa: E731
    k_model.compile(**compile_kwargs())
    module = kb.KerasModule(b_model)
    module.compile(**compile_kwargs())
    for _ in range(2):
        kh = k_model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        bh = module.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        assert_history_close(kh, bh, RTOL)


def test_batchnorm_and_training_flag_parity():
    """training=True in train steps (BatchNorm batch statistics, moving averages updated), False in evaluation."""

    def build():
        inp = keras.Input((8,), name="features")
        x = layers.Dense(16)(inp)
        x = layers.BatchNormalization(momentum=0.5)(x)
        x = layers.Activation("relu")(x)
        out = layers.Dense(4, activation="softmax", name="predictions")(x)
        return keras.Model(inp, out)

    x, y = data(n=80)
    compile_kwargs = lambda: dict(
        optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )  # noqa: E731
    kh, bh, ke, be, km, bm = run_both(
        build, compile_kwargs, dict(x=x, y=y, batch_size=16, epochs=2, validation_split=0.25), dict(x=x, y=y)
    )
    assert_history_close(kh, bh, RTOL)
    np.testing.assert_allclose(be, ke, rtol=RTOL)
    bn_k = next(l for l in km.layers if isinstance(l, layers.BatchNormalization))
    bn_b = next(l for l in bm.layers if isinstance(l, layers.BatchNormalization))
    np.testing.assert_allclose(bn_b.moving_mean.numpy(), bn_k.moving_mean.numpy(), rtol=1e-4, atol=1e-6)
    assert not np.allclose(bn_b.moving_mean.numpy(), 0.0), "moving statistics were updated during training"
