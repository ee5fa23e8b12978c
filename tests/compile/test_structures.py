"""Keras 3's output-structure rules, each form a parity test against ``keras.Model.fit`` on the same model.

Every test builds twin Keras models with the same initial weights, fits one with Keras's own ``fit`` and
the other through ``KerasModule``, with ``shuffle=False`` and the same batches, and compares the History
(keys and values) and ``evaluate``. The forms: nested outputs (a dict holding a tuple), namedtuple
outputs, losses given as a nested structure of functions, as a flat list for nested outputs, as a dict
of lists, as a one-element list for a single output; targets only for the outputs that have a loss; a
``keras.Model`` subclass overriding ``compute_loss`` or ``compute_metrics``; an optional input given
``None``; and the errors for mismatched keys, which must be Keras's (same type, same text).
The unit tests at the end cover :mod:`keras_bridge.compile.structure` itself.
"""

import collections

import keras
import numpy as np
import pytest
import torch
from helpers import assert_history_close, twin_models
from keras import layers, ops

import keras_bridge as kb
from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.metric_plan import MetricPlan
from keras_bridge.compile.structure import OutputKeyError, OutputStructure
from keras_bridge.utils.tree import (
    describe,
    first_batch_dim,
    flatten,
    flatten_with_paths,
    map_structure,
    pack_sequence_as,
)

RTOL = 1e-5
N = 48
Pair = collections.namedtuple("Pair", ["score", "cls"])


def _rng(seed=0):
    return np.random.default_rng(seed)


X = _rng().normal(size=(N, 4)).astype("float32")
Y1 = _rng(1).normal(size=(N, 1)).astype("float32")
Y2 = _rng(2).normal(size=(N, 2)).astype("float32")
Y3 = _rng(3).normal(size=(N, 3)).astype("float32")
CLS = _rng(4).integers(0, 3, size=(N,)).astype("int64")


def _optimizer():
    return keras.optimizers.SGD(learning_rate=0.05, momentum=0.5)


def run_both(build, compile_kwargs, x, y, batch_size=16, epochs=2, validation=True, **fit_kwargs):
    """Fit twin models with Keras and with the bridge; compare History and evaluate; return both models."""
    k_model, b_model = twin_models(build)
    k_model.compile(optimizer=_optimizer(), **compile_kwargs())
    module = kb.KerasModule(b_model)
    module.compile(optimizer=_optimizer(), **compile_kwargs())
    fit = dict(x=x, y=y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, **fit_kwargs)
    if validation:
        fit["validation_split"] = 0.25
    kh = k_model.fit(**fit)
    bh = module.fit(**fit)
    assert_history_close(kh, bh, rtol=RTOL)
    ke = k_model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    be = module.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
    assert sorted(ke) == sorted(be), (ke, be)
    for key in ke:
        np.testing.assert_allclose(be[key], ke[key], rtol=RTOL, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(
        k_model.evaluate(x, y, batch_size=batch_size, verbose=0),
        module.evaluate(x, y, batch_size=batch_size, verbose=0),
        rtol=RTOL,
        atol=1e-6,
    )
    return k_model, module, kh, bh


def _trunk(inp):
    return layers.Dense(8, activation="tanh", name="trunk")(inp)


def nested_dict_model():
    """Outputs ``{"a": (a1, a2), "b": bb}``: a dict holding a tuple."""
    inp = keras.Input((4,), name="x")
    h = _trunk(inp)
    a1 = layers.Dense(1, name="a1")(h)
    a2 = layers.Dense(2, name="a2")(h)
    b = layers.Dense(3, name="bb")(h)
    return keras.Model(inp, {"a": (a1, a2), "b": b})


NESTED_Y = {"a": (Y1, Y2), "b": Y3}


def pair_model():
    inp = keras.Input((4,), name="x")
    h = _trunk(inp)
    return keras.Model(inp, Pair(layers.Dense(1, name="s")(h), layers.Dense(3, activation="softmax", name="c")(h)))


def dict_model():
    inp = keras.Input((4,), name="x")
    h = _trunk(inp)
    return keras.Model(
        inp, {"s": layers.Dense(1, name="s")(h), "c": layers.Dense(3, activation="softmax", name="c")(h)}
    )


def list_model():
    inp = keras.Input((4,), name="x")
    h = _trunk(inp)
    return keras.Model(inp, [layers.Dense(1, name="s")(h), layers.Dense(3, activation="softmax", name="c")(h)])


def single_model():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, layers.Dense(1, name="out")(_trunk(inp)))


def squared_error(y_true, y_pred):
    return ops.mean(ops.square(y_true - y_pred), axis=-1)


def absolute_error(y_true, y_pred):
    return ops.mean(ops.abs(y_true - y_pred), axis=-1)


# ------------------------------------------------------------------------------------ (1) nested outputs
@pytest.mark.parametrize(
    "compile_kwargs",
    [
        lambda: dict(
            loss={"a": ("mse", "mae"), "b": "mse"},
            metrics={"a": ("mae", ["mse"]), "b": ["mae"]},
            loss_weights={"a": (1.0, 0.5), "b": 2.0},
        ),
        lambda: dict(loss="mse", metrics={"a": (None, "mae"), "b": None}),
        lambda: dict(loss={"b": "mae", "a": [None, "mse"]}, weighted_metrics={"a": (["mae"], None), "b": ["mse"]}),
    ],
    ids=["structure", "one-loss-for-all", "partial"],
)
def test_dict_holding_a_tuple(compile_kwargs):
    _, module, kh, _ = run_both(nested_dict_model, compile_kwargs, X, NESTED_Y)
    assert module.output_kind == "nested" and module.output_names == ["a1", "a2", "bb"]
    assert "val_loss" in kh.history


@pytest.mark.parametrize(
    "sample_weight",
    [_rng(5).random(N).astype("float32"), {"a": (_rng(6).random(N), None), "b": _rng(7).random(N)}],
    ids=["one-array-for-all", "nested"],
)
def test_dict_holding_a_tuple_with_sample_weights(sample_weight):
    compile_kwargs = lambda: dict(  # noqa: E731
        loss={"a": ("mse", "mae"), "b": "mse"}, weighted_metrics={"a": (["mae"], None), "b": ["mse"]}
    )
    run_both(nested_dict_model, compile_kwargs, X, NESTED_Y, validation=False, sample_weight=sample_weight)


def test_nested_outputs_predict_in_keras_structure():
    k_model, module, _, _ = run_both(nested_dict_model, lambda: dict(loss="mse"), X, NESTED_Y, validation=False)
    kp, bp = k_model.predict(X, verbose=0), module.predict(X, verbose=0)
    assert isinstance(bp, dict) and isinstance(bp["a"], tuple) and list(bp) == list(kp)
    for k_leaf, b_leaf in zip(flatten(kp), flatten(bp)):
        np.testing.assert_allclose(b_leaf, k_leaf, rtol=RTOL, atol=1e-6)


def test_nested_targets_as_a_flat_list():
    run_both(nested_dict_model, lambda: dict(loss={"a": ("mse", "mae"), "b": "mse"}), X, [Y1, Y2, Y3])


# ------------------------------------------------------------------------------------ (2) namedtuple outputs
@pytest.mark.parametrize(
    ("compile_kwargs", "y"),
    [
        (
            lambda: dict(loss=Pair("mse", "sparse_categorical_crossentropy"), metrics=Pair(["mae"], ["acc"])),
            Pair(Y1, CLS),
        ),
        (lambda: dict(loss=["mse", "sparse_categorical_crossentropy"], metrics=[["mae"], ["acc"]]), (Y1, CLS)),
        (
            lambda: dict(loss={"s": "mse", "c": "sparse_categorical_crossentropy"}, loss_weights={"s": 0.5, "c": 2.0}),
            {"s": Y1, "c": CLS},
        ),
    ],
    ids=["namedtuple-loss", "list-loss", "dict-by-output-name"],
)
def test_namedtuple_outputs(compile_kwargs, y):
    k_model, module, _, _ = run_both(pair_model, compile_kwargs, X, y)
    kp, bp = k_model.predict(X, verbose=0), module.predict(X, verbose=0)
    assert type(bp) is Pair and type(kp) is Pair
    np.testing.assert_allclose(bp.cls, kp.cls, rtol=RTOL, atol=1e-6)


# ------------------------------------------------------------------------------------ (3) (4) loss structures
def test_loss_as_a_nested_structure_of_functions():
    compile_kwargs = lambda: dict(  # noqa: E731
        loss={"a": (squared_error, absolute_error), "b": keras.losses.mean_squared_error},
        metrics={"a": ([absolute_error], None), "b": [squared_error]},
    )
    _, _, kh, _ = run_both(nested_dict_model, compile_kwargs, X, NESTED_Y)
    assert {"a/a1_loss", "a/a2_loss", "b_loss", "a1_absolute_error", "bb_squared_error"} <= set(kh.history)


@pytest.mark.parametrize(
    "loss_weights", [None, [1.0, 0.5, 2.0], {"a": (1.0, 0.5), "b": 2.0}], ids=["unweighted", "list", "structure"]
)
def test_loss_as_a_flat_list_for_nested_outputs(loss_weights):
    compile_kwargs = lambda: dict(loss=["mse", "mae", "mse"], loss_weights=loss_weights)  # noqa: E731
    if isinstance(loss_weights, dict):
        # Keras pairs a weight structure with the loss structure: give both the outputs' structure.
        compile_kwargs = lambda: dict(loss={"a": ("mse", "mae"), "b": "mse"}, loss_weights=loss_weights)  # noqa: E731
    run_both(nested_dict_model, compile_kwargs, X, NESTED_Y)


# ------------------------------------------------------------------------------------ (5) (6) lists of losses
@pytest.mark.parametrize(
    ("build", "compile_kwargs", "y"),
    [
        (single_model, lambda: dict(loss={"out": ["mse"]}, metrics=["mae"]), Y1),
        (
            dict_model,
            lambda: dict(loss={"s": ["mse", "mae"], "c": ["sparse_categorical_crossentropy"]}),
            {"s": Y1, "c": CLS},
        ),
        (
            list_model,
            lambda: dict(loss={"s": ["mse"], "c": "sparse_categorical_crossentropy"}, metrics=[["mae"], None]),
            [Y1, CLS],
        ),
    ],
    ids=["single-output", "dict-outputs", "list-outputs"],
)
def test_loss_as_a_dict_of_lists(build, compile_kwargs, y):
    run_both(build, compile_kwargs, X, y)


@pytest.mark.parametrize("y", [Y1, [Y1]], ids=["array", "one-element-list"])
def test_one_element_list_loss_for_a_single_output(y):
    run_both(single_model, lambda: dict(loss=["mse"], metrics=["mae"], loss_weights=[0.5]), X, y)


# ------------------------------------------------------------------------------------ (7) partial targets
@pytest.mark.parametrize(
    ("build", "compile_kwargs", "y"),
    [
        (dict_model, lambda: dict(loss={"s": "mse"}), {"s": Y1}),
        (dict_model, lambda: dict(loss={"s": "mse", "c": None}), {"s": Y1}),
        (list_model, lambda: dict(loss=["mse", None]), [Y1]),
        (list_model, lambda: dict(loss=[None, "sparse_categorical_crossentropy"]), CLS),
        (nested_dict_model, lambda: dict(loss={"a": (None, "mse"), "b": "mae"}), {"a": (None, Y2), "b": Y3}),
    ],
    ids=["dict-missing-key", "dict-None-loss", "list-first", "list-second", "nested-None-target"],
)
def test_targets_only_for_the_outputs_with_a_loss(build, compile_kwargs, y):
    run_both(build, compile_kwargs, X, y, validation=False)


@pytest.mark.parametrize(
    ("build", "y"), [(dict_model, {"s": Y1}), (list_model, [Y1])], ids=["dict-targets", "list-targets"]
)
def test_partial_targets_keep_the_metrics_of_the_outputs_they_give(build, y):
    # Keras drops or fails on these metrics (it aligns them with all outputs); the bridge computes them.
    module = kb.KerasModule(build())
    # A torch optimizer: the Keras model is not compiled by Keras (whose own build refuses these metrics).
    module.compile(
        optimizer=lambda p: torch.optim.SGD(p, lr=0.01), loss={"s": "mse", "c": None}, metrics={"s": ["mae"]}
    )
    history = module.fit(X, y, epochs=1, verbose=0)
    assert sorted(history.history) == ["loss", "s_mae"]


# ------------------------------------------------------------------------------------ (8) subclass overrides
class PenalizedModel(keras.Model):
    """``compute_loss`` adds an L2 penalty on the predictions to Keras's compiled loss."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        penalty = sum(ops.mean(ops.square(t)) for t in keras.tree.flatten(y_pred))
        return loss + 0.1 * penalty


class OldStylePenalizedModel(keras.Model):
    """An override written before Keras 3.3: no ``training`` argument."""

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
        return super().compute_loss(x, y, y_pred, sample_weight) + 0.1 * ops.mean(ops.abs(y_pred))


class PredictionMeanModel(keras.Model):
    """``compute_metrics`` adds a tracked metric to Keras's logs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prediction_mean = keras.metrics.Mean(name="prediction_mean")

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        self.prediction_mean.update_state(y_pred)
        logs["prediction_mean"] = self.prediction_mean.result()
        return logs


class LastBatchModel(keras.Model):
    """``compute_metrics`` returns a key no metric has: Keras then logs the last step's values."""

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        logs["batch_max"] = ops.max(ops.abs(y_pred))
        return logs


def _subclassed(cls, two_outputs=False):
    def build():
        inp = keras.Input((4,), name="x")
        h = _trunk(inp)
        if two_outputs:
            return cls(inp, [layers.Dense(1, name="s")(h), layers.Dense(2, name="t")(h)])
        return cls(inp, layers.Dense(1, name="out")(h))

    return build


@pytest.mark.parametrize(
    ("cls", "two_outputs"),
    [(PenalizedModel, False), (PenalizedModel, True), (OldStylePenalizedModel, False)],
    ids=["one-output", "two-outputs", "no-training-argument"],
)
def test_model_subclass_compute_loss_is_honoured(cls, two_outputs):
    y = [Y1, Y2] if two_outputs else Y1
    compile_kwargs = lambda: dict(loss="mse", metrics=[["mae"], ["mse"]] if two_outputs else ["mae"])  # noqa: E731
    _, module, _, bh = run_both(_subclassed(cls, two_outputs), compile_kwargs, X, y)
    assert module.train_tracker.hooks.loss and module.train_tracker.hooks.keras_logs
    # The penalty is in the loss: a plain model would log less.
    plain = kb.KerasModule(_subclassed(keras.Model, two_outputs)())
    plain.compile(optimizer="sgd", **compile_kwargs())
    plain.set_weights(module.get_weights())
    penalized = module.evaluate(X, y, verbose=0, return_dict=True)
    assert penalized["loss"] > plain.evaluate(X, y, verbose=0, return_dict=True)["loss"]
    assert ("s_loss" in bh.history) == two_outputs


@pytest.mark.parametrize("cls", [PredictionMeanModel, LastBatchModel], ids=["tracked-metric", "last-batch-logs"])
def test_model_subclass_compute_metrics_is_honoured(cls):
    _, module, kh, _ = run_both(_subclassed(cls), lambda: dict(loss="mse", metrics=["mae"]), X, Y1)
    assert module.train_tracker.hooks.metrics and module.train_tracker.hooks.keras_logs
    extra = "prediction_mean" if cls is PredictionMeanModel else "batch_max"
    assert extra in kh.history and f"val_{extra}" in kh.history


def test_model_subclass_with_both_overrides_and_a_torch_optimizer_still_calls_them():
    # Without a Keras optimizer the Keras model is not compiled by Keras: the override's loss still counts.
    class Scaled(keras.Model):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return 3.0 * ops.mean(ops.square(y - y_pred))

    inp = keras.Input((4,))
    module = kb.KerasModule(Scaled(inp, layers.Dense(1)(inp)))
    module.compile(optimizer=torch.optim.SGD, loss="mse")
    logs = module.evaluate(X, Y1, verbose=0, return_dict=True)
    mse = float(np.mean((module.predict(X, verbose=0) - Y1) ** 2))
    assert logs["loss"] == pytest.approx(3.0 * mse, rel=1e-5)


# ------------------------------------------------------------------------------------ (9) optional inputs
class AddIfGiven(layers.Layer):
    def call(self, inputs):
        a, b = inputs
        return a if b is None else a + b


def optional_input_model():
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b", optional=True)
    return keras.Model([a, b], layers.Dense(1, name="out")(AddIfGiven()([a, b])))


def test_optional_input_given_none():
    k_model, module, _, _ = run_both(optional_input_model, lambda: dict(loss="mse", metrics=["mae"]), [X, None], Y1)
    np.testing.assert_allclose(
        module.predict([X, None], verbose=0), k_model.predict([X, None], verbose=0), rtol=RTOL, atol=1e-6
    )


def test_optional_input_given_none_in_a_dict():
    def build():
        a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b", optional=True)
        return keras.Model({"a": a, "b": b}, layers.Dense(1, name="out")(AddIfGiven()([a, b])))

    run_both(build, lambda: dict(loss="mse"), {"a": X, "b": None}, Y1)


def test_optional_input_given_an_array():
    run_both(optional_input_model, lambda: dict(loss="mse"), [X, 0.5 * X], Y1)


# ------------------------------------------------------------------------------------ (10) mismatches
def _keras_error(build, compile_kwargs, y):
    model = build()
    model.compile(optimizer="sgd", **compile_kwargs)
    with pytest.raises(Exception) as info:
        model.fit(X, y, epochs=1, verbose=0)
    return info.value


def _bridge_error(build, compile_kwargs, y):
    module = kb.KerasModule(build())
    with pytest.raises(Exception) as info:
        module.compile(optimizer="sgd", **compile_kwargs)
        module.fit(X, y, epochs=1, verbose=0)
    return info.value


KERAS_ZZ_PATH = (
    "The path: ('zz',) in the `loss` argument, can't be found in either the model's output (`y_pred`) or in the "
    "labels (`y_true`)."
)


class SubclassedDict(keras.Model):
    """A subclassed model (no ``output_names``) returning a dict."""

    def __init__(self):
        super().__init__()
        self.s = layers.Dense(1)
        self.c = layers.Dense(3, activation="softmax")

    def call(self, x):
        return {"s": self.s(x), "c": self.c(x)}


@pytest.mark.parametrize(
    ("build", "compile_kwargs", "y", "essential"),
    [
        (
            list_model,
            dict(loss={"s": "mse", "zz": "mae"}),
            [Y1, CLS],
            "Expected keys ['s', 'c'] in loss dict, but found loss.keys()=['s', 'zz']",
        ),
        (dict_model, dict(loss={"s": "mse", "c": "mae", "zz": "mse"}), {"s": Y1, "c": CLS}, KERAS_ZZ_PATH),
        (SubclassedDict, dict(loss={"s": "mse", "zz": "mae"}), {"s": Y1, "c": CLS}, KERAS_ZZ_PATH),
        (nested_dict_model, dict(loss={"a": ("mse", "mse"), "b": "mse", "zz": "mse"}), NESTED_Y, KERAS_ZZ_PATH),
        (
            pair_model,
            dict(loss={"score": "mse", "cls": "mse"}),
            Pair(Y1, CLS),
            "Expected keys ['s', 'c'] in loss dict, but found loss.keys()=['score', 'cls']",
        ),
        (
            dict_model,
            dict(loss={"s": "mse", "c": "mse"}),
            {"s": Y1},
            "y_true and y_pred have different structures.\ny_true: {'s': '*'}\ny_pred: {'c': '*', 's': '*'}\n",
        ),
        (
            dict_model,
            dict(loss={"s": "mse"}, metrics={"zz": ["mae"]}),
            {"s": Y1, "c": CLS},
            "Invalid `metrics`. `metrics` should contain metrics objects and either be a dict or a list matching the "
            "output names of the functional model ['c', 's'] or match the output structure of the model: "
            "{'c': 'X', 's': 'X'}.\nReceived: metrics={'zz': ['mae']}",
        ),
    ],
    ids=[
        "list-outputs-loss-key",
        "dict-outputs-loss-key",
        "subclassed-loss-key",
        "nested-loss-key",
        "namedtuple-loss-key",
        "missing-target",
        "metrics-key",
    ],
)
def test_mismatched_keys_fail_with_keras_error(build, compile_kwargs, y, essential):
    keras_error = _keras_error(build, compile_kwargs, y)
    bridge_error = _bridge_error(build, compile_kwargs, y)
    assert isinstance(bridge_error, type(keras_error)), (type(bridge_error), type(keras_error))
    assert essential in str(keras_error).strip("'\"")
    assert essential in str(bridge_error)


def test_output_key_error_is_a_key_error_and_a_value_error():
    plan = LossPlan({"a": "mse", "zz": "mae"})
    with pytest.raises(OutputKeyError) as info:
        plan.build(OutputStructure({"a": torch.zeros(1), "b": torch.zeros(1)}))
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("The path: ('zz',)")


# ------------------------------------------------------------------------------------ torch modules keep theirs
class TorchNested(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 1)
        self.b = torch.nn.Linear(4, 2)
        self.c = torch.nn.Linear(4, 3)

    def forward(self, x):
        return {"pair": (self.a(x), self.b(x)), "c": self.c(x)}


def test_torch_module_with_nested_outputs():
    module = kb.KerasModule(TorchNested())
    module.compile(optimizer="sgd", loss={"pair": ("mse", "mae"), "c": "mse"}, metrics={"c": ["mae"]})
    history = module.fit(X, {"pair": (Y1, Y2), "c": Y3}, epochs=1, verbose=0)
    assert sorted(history.history) == ["c_loss", "c_mae", "loss", "pair/0_loss", "pair/1_loss"]
    preds = module.predict(X, verbose=0)
    assert isinstance(preds["pair"], tuple) and preds["pair"][1].shape == (N, 2)


# ------------------------------------------------------------------------------------ structure unit tests
def test_flattening_follows_keras_tree():
    structure = {"b": Pair(1, [2, 3]), "a": collections.OrderedDict([("z", 4), ("y", 5)]), "c": None}
    assert flatten(structure) == keras.tree.flatten(structure)
    assert [p for p, _ in flatten_with_paths(structure)] == [
        ("a", "z"),
        ("a", "y"),
        ("b", 0),
        ("b", 1, 0),
        ("b", 1, 1),
        ("c",),
    ]
    packed = pack_sequence_as(structure, list(range(6)))
    assert type(packed["b"]) is Pair and isinstance(packed["a"], collections.OrderedDict)
    assert flatten(packed) == list(range(6))
    with pytest.raises(ValueError, match="Expected 6 leaves"):
        pack_sequence_as(structure, [1])


def test_map_structure_keeps_namedtuples():
    mapped = map_structure(lambda v: v * 2, (Pair(1, 2), [3], {"k": 4}))
    assert mapped == (Pair(2, 4), [6], {"k": 8}) and type(mapped[0]) is Pair


@pytest.mark.parametrize(
    ("y_pred", "declared", "kind", "names", "loss_names"),
    [
        (1, None, "single", ["output"], ["output"]),
        (1, ["out"], "single", ["out"], ["out"]),
        ([1, 2], ["s", "c"], "list", ["s", "c"], ["s", "c"]),
        ((1, 2), None, "list", ["output_1", "output_2"], ["output_1", "output_2"]),
        ({"s": 1, "c": 2}, ["x", "y"], "dict", ["c", "s"], ["c", "s"]),
        (Pair(1, 2), ["s", "c"], "list", ["s", "c"], ["s", "c"]),
        ({"b": 1, "a": (2, 3)}, ["a1", "a2", "bb"], "nested", ["a1", "a2", "bb"], ["a/a1", "a/a2", "b"]),
        ({"b": 1, "a": (2, 3)}, None, "nested", ["a_0", "a_1", "b"], ["a/0", "a/1", "b"]),
    ],
)
def test_output_structure_names(y_pred, declared, kind, names, loss_names):
    outputs = OutputStructure(y_pred, declared)
    assert (outputs.kind, outputs.names, outputs.loss_names) == (kind, names, loss_names)


NESTED = OutputStructure({"a": (0, 0), "b": 0}, ["a1", "a2", "bb"])
LIST = OutputStructure([0, 0], ["s", "c"])


@pytest.mark.parametrize(
    ("outputs", "y", "argument", "with_loss", "expected"),
    [
        (NESTED, {"a": ("p", "q"), "b": "r"}, "y", None, ["p", "q", "r"]),
        (NESTED, {"b": "r", "a": ["p", "q"]}, "y", None, ["p", "q", "r"]),
        (NESTED, {"b": "r"}, "y", None, [None, None, "r"]),
        (NESTED, {"a": (None, "q")}, "y", None, [None, "q", None]),
        (NESTED, ["p", "q", "r"], "y", None, ["p", "q", "r"]),
        (NESTED, ["q", "r"], "y", [False, True, True], [None, "q", "r"]),
        (NESTED, "w", "sample_weight", None, ["w", "w", "w"]),
        (NESTED, ["w"], "sample_weight", None, ["w", "w", "w"]),
        (LIST, {"c": "q"}, "y", None, [None, "q"]),
        (LIST, Pair("p", "q"), "y", None, ["p", "q"]),
        (LIST, "q", "y", [False, True], [None, "q"]),
        (LIST, ["p"], "y", [True, False], ["p", None]),
    ],
)
def test_targets_are_aligned_with_the_outputs(outputs, y, argument, with_loss, expected):
    assert outputs.targets(y, argument, with_loss) == expected


@pytest.mark.parametrize(
    ("outputs", "y", "fragments"),
    [
        (NESTED, {"a": "p", "b": "r"}, ["y_true and y_pred have different structures", "{'a': '*', 'b': '*'}"]),
        (NESTED, ["p", "q"], ["y_true: ['*', '*']", "y_pred: {'a': ('*', '*'), 'b': '*'}"]),
        (LIST, {"s": "p", "zz": "q"}, ["different structures", "Unknown output name(s) ['zz']", "['s', 'c']"]),
        (LIST, "p", ["y_true: *"]),
    ],
)
def test_targets_that_do_not_fit_fail_with_keras_wording(outputs, y, fragments):
    with pytest.raises(ValueError) as info:
        outputs.targets(y)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_describe_and_first_batch_dim():
    assert describe(Pair(1, {"k": 2}), "X") == "Pair(score='X', cls={'k': 'X'})"
    assert first_batch_dim({"a": None, "b": torch.zeros(5, 2)}) == 5
    assert first_batch_dim([None, torch.zeros(3)]) == 3


# ------------------------------------------------------------------------------------ plans on nested outputs
def _terms(loss, loss_weights=None, outputs=NESTED):
    plan = LossPlan(loss, loss_weights)
    plan.build(outputs)
    return [(t.index, t.log_name, t.weight) for t in plan.terms], plan


@pytest.mark.parametrize(
    ("loss", "loss_weights", "expected"),
    [
        ({"a": ("mse", "mae"), "b": "mse"}, None, [(0, "a/a1", 1.0), (1, "a/a2", 1.0), (2, "b", 1.0)]),
        ({"b": "mse", "a": (None, "mae")}, {"b": 2.0, "a": (None, 0.5)}, [(2, "b", 2.0), (1, "a/a2", 0.5)]),
        (["mse", "mae", "mse"], [1.0, 2.0, 3.0], [(0, "a/a1", 1.0), (1, "a/a2", 2.0), (2, "b", 3.0)]),
        ("mse", 0.5, [(0, "a/a1", 0.5), (1, "a/a2", 0.5), (2, "b", 0.5)]),
        # Keras: a list where the outputs have a tuple holds several losses for the tuple (checked on Keras)
        ({"a": [("mse", "mae"), ("mae", None)]}, None, [(0, "a/a1", 1.0), (1, "a/a2", 1.0), (0, "a/a1", 1.0)]),
        ({"a": ("mse", "mae"), "b": "mse"}, {"bb": 4.0}, [(0, "a/a1", 1.0), (1, "a/a2", 1.0), (2, "b", 4.0)]),
    ],
    ids=["structure", "dict-order-and-weights", "flat-list", "one-for-all", "two-losses-one-output", "weights-by-name"],
)
def test_loss_plan_on_nested_outputs(loss, loss_weights, expected):
    terms, plan = _terms(loss, loss_weights)
    assert terms == expected
    assert plan.output_has_loss == [i in {t[0] for t in expected} for i in range(3)]


def test_loss_list_for_list_outputs_follows_keras():
    terms, _ = _terms(["mse"], outputs=LIST)  # Keras: a shorter list covers the first outputs
    assert terms == [(0, "s", 1.0)]
    with pytest.raises(KeyError, match=r"The path: \(2,\)"):
        _terms(["mse", "mse", "mse"], outputs=LIST)


@pytest.mark.parametrize(
    ("loss", "error", "fragment"),
    [
        ({"a": "mse", "b": "mse"}, ValueError, "is a single loss, but the model's output there is a structure of 2"),
        ({"a": {"x": "mse"}, "b": "mse"}, KeyError, "The path: ('a',) in the `loss` argument, can't be found in the"),
        ({"a": ("mse", "mse", "mse")}, KeyError, "The path: ('a', 2)"),
        (["mse", "mse"], ValueError, "`loss` is a list of 2 entries but the model has 3 outputs"),
    ],
    ids=["loss-on-a-subtree", "dict-for-a-tuple", "long-tuple", "short-flat-list"],
)
def test_loss_that_does_not_fit_nested_outputs(loss, error, fragment):
    with pytest.raises(error) as info:
        _terms(loss)
    assert fragment in str(info.value)


def test_metric_plan_on_nested_outputs():
    y = [torch.zeros(2, 1), torch.zeros(2, 2), torch.zeros(2, 3)]
    plan = MetricPlan({"a": ("mae", ["mse", "mae"]), "b": None}, {"b": ["mae"]})
    plan.build(NESTED, y, y)
    assert plan.names == ["a1_mae", "a2_mse", "a2_mae", "bb_mae"]
    assert [(e.index, e.weighted) for e in plan.entries] == [(0, False), (1, False), (1, False), (2, True)]
    for bad, fragment in [
        (["mae", "mae"], "a dict ['a', 'b'], but the argument there is a list"),
        ({"a": ["mae"]}, "(2 at this level) but the argument there is a list of 1 entries"),
        ({"a": "mae", "zz": ["mae"]}, "unknown output name(s) ['zz']"),
        ({"a": {"k": "mae"}}, "a dict"),
    ]:
        with pytest.raises(ValueError) as info:
            MetricPlan(bad).build(NESTED, y, y)
        message = str(info.value)
        assert fragment in message and "Invalid `metrics`" in message, message
        assert "output names of the functional model ['a1', 'a2', 'bb']" in message
