"""Bad inputs fail before any weight changes, with a message that names the argument and the value."""

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.a = torch.nn.Linear(8, 1)
        self.b = torch.nn.Linear(8, 3)

    def forward(self, features, extra=None):
        h = torch.relu(self.body(features))
        return {"score": self.a(h), "cls": self.b(h)}


X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
Y = {"score": np.zeros((20, 1), "float32"), "cls": np.zeros(20, "int64")}


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


def compiled(**kwargs):
    module = kb.KerasModule(TwoHeads())
    module.compile(**{"optimizer": "sgd", "loss": {"score": "mse", "cls": "sparse_categorical_crossentropy"}, **kwargs})
    return module


CASES = [
    # (compile kwargs, fit kwargs, exception, fragments that must appear in the message)
    (dict(loss={"scroe": "mse"}), {}, ValueError, ["scroe", "loss", "score", "cls"]),
    (dict(metrics={"clss": ["acc"]}), {}, ValueError, ["clss", "metrics", "score"]),
    (dict(loss_weights={"bogus": 2.0}), {}, ValueError, ["bogus", "loss_weights"]),
    ({}, dict(y={"score": np.zeros((19, 1), "float32"), "cls": np.zeros(20, "int64")}), ValueError, ["19", "20"]),
    ({}, dict(sample_weight=np.ones(7)), ValueError, ["7", "20", "sample_weight"]),
    ({}, dict(validation_split=1.5), ValueError, ["validation_split", "1.5"]),
    ({}, dict(validation_split=-0.1), ValueError, ["validation_split", "-0.1"]),
    ({}, dict(batch_size=0), ValueError, ["batch_size", "0"]),
    ({}, dict(class_weight={0: 1.0, 1: 2.0}), ValueError, ["class_weight", "single output"]),
    ({}, dict(x={"featurez": X}), ValueError, ["featurez", "features"]),
]


@pytest.mark.parametrize("compile_kwargs, fit_kwargs, exc, fragments", CASES)
def test_bad_input_fails_before_training(compile_kwargs, fit_kwargs, exc, fragments):
    module = kb.KerasModule(TwoHeads())
    before = weights(module)
    with pytest.raises(exc) as info:
        module.compile(
            **{"optimizer": "sgd", "loss": {"score": "mse", "cls": "sparse_categorical_crossentropy"}, **compile_kwargs}
        )
        module.fit(**{"x": X, "y": Y, "verbose": 0, **fit_kwargs})
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    for a, b in zip(before, weights(module)):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(loss="mean_squared_errror"), ["loss", "mean_squared_errror", "Did you mean 'mean_squared_error'?"]),
        (dict(loss="mse", metrics=["acuracy"]), ["metrics", "acuracy", "Did you mean 'accuracy'?"]),
        (dict(loss="mse", optimizer="adamm"), ["optimizer", "adamm", "rmsprop", "Did you mean 'adam'?"]),
        (dict(loss="mse", metrics="mae"), ["metrics", "mae", "list"]),
    ],
)
def test_unknown_identifiers_fail_at_compile(kwargs, fragments):
    module = kb.KerasModule(torch.nn.Linear(4, 1))
    with pytest.raises((ValueError, TypeError)) as info:
        module.compile(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_fit_before_compile():
    module = kb.KerasModule(torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="compile"):
        module.fit(X, np.zeros((20, 1), "float32"), verbose=0)


def test_keras_list_output_model_rejects_unknown_loss_key_at_compile():
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, [keras.layers.Dense(1, name="a")(inp), keras.layers.Dense(1, name="b")(inp)])
    module = kb.KerasModule(model)
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        module.compile(loss={"c": "mse"})


def test_not_a_module():
    with pytest.raises(TypeError, match="model"):
        kb.KerasModule(lambda x: x)


# ---------------------------------------------------------------------------- the bad-input table
# One row per mistake, across compile, fit, evaluate, predict, the data kinds, callbacks, schedules and
# `trainer=` options. Every row runs on a freshly compiled model and must fail (or, where Keras only
# warns, warn the same) before any weight changes, with a message naming the argument, the value given
# and what is accepted.
import threading  # noqa: E402

from keras_bridge.data.adapters import pydataset as pydataset_adapter  # noqa: E402

XS = np.random.default_rng(1).normal(size=(20, 4)).astype("float32")
YS = np.random.default_rng(2).integers(0, 3, size=20)


def classifier(kind="torch", compile_kwargs=None):
    if kind == "torch":
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)))
    else:
        inputs = keras.Input((4,), name="features")
        module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(inputs)))
    module.compile(**{"optimizer": "sgd", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
                      **(compile_kwargs or {})})  # fmt: skip
    return module


def with_value(array, index, value):
    array = np.array(array, dtype="float32")
    array.flat[index] = value
    return array


class Batches(keras.utils.PyDataset):
    def __init__(self, fail_at=None, arity=2, **kwargs):
        super().__init__(**kwargs)
        self.fail_at, self.arity = fail_at, arity

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == self.fail_at:
            raise KeyError(f"no batch file for index {index}")
        batch = (XS[index * 5 : index * 5 + 5], YS[index * 5 : index * 5 + 5])
        return batch + (np.ones(5),) * (self.arity - 2)


class Unpicklable(Batches):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lock = threading.Lock()  # a lock cannot be pickled


def fit(**kwargs):
    return lambda m: m.fit(**{"x": XS, "y": YS, "epochs": 1, "verbose": 0, **kwargs})


def spawn_context(monkeypatch):
    monkeypatch.setattr(pydataset_adapter, "MULTIPROCESSING_CONTEXT", "spawn")


PCD = keras.optimizers.schedules.PiecewiseConstantDecay
TABLE = [
    # id, model kind, call, expected (exception type or ("warns", category)), fragments of the message
    # -- compile
    ("compile-optimizer-type", "torch", lambda m: m.compile(optimizer=42, loss="mse"), TypeError, ["optimizer", "42"]),
    (
        "compile-loss-type",
        "torch",
        lambda m: m.compile(optimizer="sgd", loss=42),
        (TypeError, ValueError),
        ["loss", "42"],
    ),
    (
        "compile-metric-type",
        "torch",
        lambda m: m.compile(optimizer="sgd", loss="mse", metrics=[42]),
        (TypeError, ValueError),
        ["metric", "42"],
    ),
    (
        "compile-loss-weights-type",
        "torch",
        lambda m: m.compile(optimizer="sgd", loss="mse", loss_weights="a"),
        (TypeError, ValueError),
        ["loss_weights", "a"],
    ),
    (
        "schedule-boundaries-torch",
        "torch",
        lambda m: m.compile(optimizer=keras.optimizers.SGD(PCD([10, 5], [1.0, 0.5, 0.1])), loss="mse"),
        ValueError,
        ["boundaries", "[10, 5]", "strictly increasing"],
    ),
    (
        "schedule-boundaries-keras",
        "keras",
        lambda m: m.compile(optimizer=keras.optimizers.Adam(PCD([3, 3], [1.0, 0.5, 0.1])), loss="mse"),
        ValueError,
        ["boundaries", "[3, 3]", "strictly increasing"],
    ),
    ("schedule-lengths", "torch", lambda m: PCD([10, 20], [1.0, 0.5]), ValueError, ["boundaries", "values", "length"]),
    # -- fit: scalar arguments
    ("fit-no-y", "torch", fit(y=None), ValueError, ["`y`", "y=None", "sparse_categorical_crossentropy"]),
    ("fit-no-y-keras", "keras", fit(y=None), ValueError, ["`y`", "y=None", "loss=None"]),
    (
        "fit-no-y-batches",
        "torch",
        lambda m: m.fit((batch for batch in [XS[:10], XS[10:]]), epochs=1, verbose=0),
        ValueError,
        ["`y`", "the first batch of `x` holds no targets"],
    ),
    ("fit-epochs-str", "torch", fit(epochs="2"), ValueError, ["epochs", "'2'", "integer"]),
    ("fit-epochs-negative", "torch", fit(epochs=-1), ValueError, ["epochs", "-1", ">= 0"]),
    ("fit-initial-epoch", "torch", fit(initial_epoch=-2), ValueError, ["initial_epoch", "-2"]),
    ("fit-verbose", "torch", fit(verbose=5), ValueError, ["verbose", "5", "'auto'"]),
    ("fit-shuffle", "torch", fit(shuffle="yes"), ValueError, ["shuffle", "'yes'", "'batch'"]),
    ("fit-validation-freq", "torch", fit(validation_freq=0), ValueError, ["validation_freq", "0", ">= 1"]),
    ("fit-steps-per-epoch", "torch", fit(steps_per_epoch=0), ValueError, ["steps_per_epoch", "0", ">= 1"]),
    ("fit-validation-split", "torch", fit(validation_split=1.0), ValueError, ["validation_split", "1.0", "[0, 1)"]),
    ("fit-batch-size-float", "torch", fit(batch_size=2.5), ValueError, ["batch_size", "2.5", "positive integer"]),
    (
        "fit-batch-size-too-large",
        "torch",
        fit(batch_size=64, epochs=0),
        ("warns", UserWarning),
        ["batch_size=64", "20 samples"],
    ),
    # -- fit: arrays
    ("fit-x-none", "torch", fit(x=None), ValueError, ["x", "training data"]),
    ("fit-x-empty", "torch", fit(x=XS[:0], y=YS[:0]), ValueError, ["`x`", "0 samples", "at least one"]),
    ("fit-x-strings", "torch", fit(x=np.array([["a"] * 4] * 20)), TypeError, ["`x`", "<U1", "'a'", "numbers"]),
    ("fit-x-type", "torch", fit(x=42, y=None), TypeError, ["`x`", "int", "arrays"]),
    ("fit-x-nan", "torch", fit(x=with_value(XS, 13, np.nan)), ValueError, ["`x`", "finite", "sample 3", "nan"]),
    ("fit-x-inf", "torch", fit(x=with_value(XS, 41, np.inf)), ValueError, ["`x`", "finite", "sample 10", "inf"]),
    (
        "fit-sample-weight-nan",
        "torch",
        fit(sample_weight=with_value(np.ones(20), 4, np.nan)),
        ValueError,
        ["`sample_weight`", "finite", "sample 4", "nan"],
    ),
    (
        "fit-sample-weight-negative",
        "torch",
        fit(sample_weight=with_value(np.ones(20), 9, -0.5)),
        ValueError,
        ["`sample_weight`", ">= 0", "sample 9", "-0.5"],
    ),
    ("fit-sample-weight-length", "torch", fit(sample_weight=np.ones(7)), ValueError, ["sample_weight", "7", "20"]),
    (
        "fit-class-weight-negative",
        "torch",
        fit(class_weight={0: 1.0, 1: -2.0, 2: 1.0}),
        ValueError,
        ["class_weight", "-2.0", ">= 0"],
    ),
    (
        "fit-class-weight-type",
        "torch",
        fit(class_weight="balanced"),
        ValueError,
        ["class_weight", "'balanced'", "dict"],
    ),
    (
        "fit-labels-above-range",
        "torch",
        fit(y=np.full(20, 12)),
        ValueError,
        ["label value of 12", "3 classes", "[0, 2]", "training batch 0 of epoch 1"],
    ),
    (
        "fit-labels-negative",
        "keras",
        fit(y=np.full(20, -1)),
        ValueError,
        ["label value of -1", "3 classes", "training batch 0 of epoch 1"],
    ),
    ("fit-y-dict-keys", "keras", fit(y={"prob": YS}), ValueError, ["prob", "probs"]),
    ("fit-x-dict-keys", "keras", fit(x={"feature": XS}), ValueError, ["feature", "features"]),
    ("fit-x-wrong-width", "keras", fit(x=np.zeros((20, 5), "float32")), ValueError, ["shape", "5", "4"]),
    (
        "fit-validation-data-arity",
        "torch",
        fit(validation_data=(XS, YS, None, None)),
        ValueError,
        ["validation_data", "length 4", "(x_val, y_val)"],
    ),
    (
        "fit-validation-data-nan",
        "torch",
        fit(validation_data=(with_value(XS, 0, np.nan), YS)),
        ValueError,
        ["`validation_data`", "`x`", "finite", "sample 0"],
    ),
    # -- data kinds
    (
        "pydataset-getitem-raises",
        "torch",
        fit(x=Batches(fail_at=0), y=None),
        KeyError,
        ["Batches.__getitem__(0)", "no batch file for index 0"],
    ),
    ("pydataset-arity", "torch", fit(x=Batches(arity=4), y=None), ValueError, ["Batches", "length 4"]),
    ("pydataset-with-y", "torch", fit(x=Batches(), y=YS), ValueError, ["`y`", "Batches", "(x, y)"]),
    (
        "pydataset-validation-split",
        "torch",
        fit(x=Batches(), y=None, validation_split=0.2),
        ValueError,
        ["validation_split", "0.2", "validation_data"],
    ),
    (
        "pydataset-unpicklable",
        "torch",
        fit(x=Unpicklable(workers=2, use_multiprocessing=True), y=None),
        ValueError,
        ["`x`", "Unpicklable", "use_multiprocessing=True", "'spawn'", "pickled", "lock"],
    ),
    (
        "dataloader-batch-arity",
        "torch",
        fit(x=torch.utils.data.DataLoader([(XS[0], YS[0], 1.0, 2.0)] * 4, batch_size=2), y=None),
        ValueError,
        ["batch 0", "length 4"],
    ),
    # -- callbacks
    ("callbacks-type", "torch", fit(callbacks=["early_stopping"]), TypeError, ["callbacks", "'early_stopping'"]),
    (
        "callbacks-config-class",
        "torch",
        fit(callbacks=[{"class_name": "EarlyStoping", "config": {}}]),
        ValueError,
        ["EarlyStoping", "EarlyStopping"],
    ),
    (
        "callbacks-config-argument",
        "torch",
        fit(callbacks=[{"class_name": "EarlyStopping", "config": {"patiense": 2}}]),
        ValueError,
        ["patiense", "patience"],
    ),
    (
        "checkpoint-extension-keras",
        "torch",
        lambda m: keras.callbacks.ModelCheckpoint("model.txt"),
        ValueError,
        ["filepath", "model.txt", ".keras"],
    ),
    (
        "checkpoint-extension-kb",
        "torch",
        lambda m: kb.callbacks.ModelCheckpoint("model.txt"),
        ValueError,
        ["filepath", "model.txt", ".keras", ".ckpt"],
    ),
    (
        "checkpoint-weights-extension",
        "torch",
        lambda m: kb.callbacks.ModelCheckpoint("model.keras", save_weights_only=True),
        ValueError,
        ["save_weights_only", "model.keras", ".weights.h5"],
    ),
    (
        "early-stopping-mode",
        "torch",
        lambda m: keras.callbacks.EarlyStopping(mode="bogus"),
        ("warns", UserWarning),
        ["EarlyStopping mode 'bogus' is unknown", "auto"],
    ),
    (
        "reduce-lr-factor",
        "torch",
        lambda m: keras.callbacks.ReduceLROnPlateau(factor=1.5),
        ValueError,
        ["factor", "1.5"],
    ),
    (
        "callbacks-resumable-data",
        "torch",
        fit(
            x=torch.utils.data.DataLoader(list(zip(XS, YS)), batch_size=5),
            y=None,
            callbacks=[kb.callbacks.ResumableCheckpoint("backup", save_freq=2)],
        ),
        ValueError,
        ["ResumableCheckpoint", "`x`", "DataLoader", "arrays", "BackupAndRestore"],
    ),
    (
        "lr-scheduler-output",
        "torch",
        fit(callbacks=[keras.callbacks.LearningRateScheduler(lambda epoch, lr: "fast")]),
        ValueError,
        ["schedule", "float"],
    ),
    # -- trainer= options
    ("trainer-type", "torch", fit(trainer="gpu"), TypeError, ["trainer", "str", "lightning.Trainer"]),
    (
        "trainer-unknown-option",
        "torch",
        fit(trainer={"max_epoch": 3}),
        ValueError,
        ["trainer", "'max_epoch'", "Did you mean 'max_epochs'?"],
    ),
    ("trainer-conflict", "torch", fit(epochs=2, trainer={"max_epochs": 5}), ValueError, ["max_epochs=5", "epochs"]),
    (
        "trainer-validation-conflict",
        "torch",
        fit(validation_freq=2, trainer={"check_val_every_n_epoch": 3}),
        ValueError,
        ["check_val_every_n_epoch=3", "validation_freq"],
    ),
    # -- saving: every refused file kind names the method that handles it
    ("save-weights-file", "torch", lambda m: m.save("m.weights.h5"), ValueError, ["save_weights('m.weights.h5')"]),
    ("save-weights-to-keras-file", "torch", lambda m: m.save_weights("m.keras"), ValueError, ["save('m.keras')"]),
    (
        "load-weights-from-keras-file",
        "torch",
        lambda m: m.load_weights("m.keras"),
        ValueError,
        ["kb.load_model('m.keras')"],
    ),  # fmt: skip
    (
        "load-model-of-weights",
        "torch",
        lambda m: kb.load_model("m.weights.pt"),
        ValueError,
        ["load_weights('m.weights.pt')"],
    ),  # fmt: skip
    # -- evaluate
    ("evaluate-steps", "torch", lambda m: m.evaluate(XS, YS, steps=0, verbose=0), ValueError, ["steps", "0", ">= 1"]),
    (
        "evaluate-batch-size",
        "torch",
        lambda m: m.evaluate(XS, YS, batch_size="8", verbose=0),
        ValueError,
        ["batch_size", "'8'"],
    ),
    (
        "evaluate-x-nan",
        "torch",
        lambda m: m.evaluate(with_value(XS, 2, np.nan), YS, verbose=0),
        ValueError,
        ["`x`", "finite", "sample 0"],
    ),
    (
        "evaluate-sample-weight-negative",
        "torch",
        lambda m: m.evaluate(XS, YS, sample_weight=-np.ones(20), verbose=0),
        ValueError,
        ["`sample_weight`", ">= 0"],
    ),
    (
        "evaluate-labels",
        "torch",
        lambda m: m.evaluate(XS, np.full(20, 5), verbose=0),
        ValueError,
        ["label value of 5", "3 classes", "evaluation batch 0"],
    ),
    (
        "evaluate-uncompiled",
        "torch",
        lambda m: kb.KerasModule(torch.nn.Linear(4, 3)).evaluate(XS, YS, verbose=0),
        ValueError,
        ["compile"],
    ),
    # -- predict
    ("predict-x-none", "torch", lambda m: m.predict(None, verbose=0), TypeError, ["`x`", "NoneType"]),
    ("predict-steps", "torch", lambda m: m.predict(XS, steps=-1, verbose=0), ValueError, ["steps", "-1"]),
    ("predict-batch-size", "torch", lambda m: m.predict(XS, batch_size=0, verbose=0), ValueError, ["batch_size", "0"]),
    ("predict-x-empty", "torch", lambda m: m.predict(XS[:0], verbose=0), ValueError, ["`x`", "0 samples"]),
    ("predict-x-dict", "keras", lambda m: m.predict({"feature": XS}, verbose=0), ValueError, ["feature", "features"]),
]


@pytest.mark.parametrize("case", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_table(case, monkeypatch, tmp_path):
    name, kind, call, expected, fragments = case
    monkeypatch.chdir(tmp_path)
    if name == "pydataset-unpicklable":
        spawn_context(monkeypatch)
    module = classifier(kind)
    before = weights(module)
    if isinstance(expected, tuple) and expected and expected[0] == "warns":
        with pytest.warns(expected[1]) as caught:
            call(module)
        message = " ".join(str(w.message) for w in caught)
    else:
        with pytest.raises(expected) as info:
            call(module)
        message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    for a, b in zip(before, weights(module)):
        assert torch.equal(a, b), name


def test_the_table_covers_every_area():
    assert len(TABLE) >= 40
    areas = {row[0].split("-")[0] for row in TABLE}
    assert {"compile", "fit", "evaluate", "predict", "pydataset", "callbacks", "schedule", "trainer"} <= areas
