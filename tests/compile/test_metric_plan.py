"""MetricPlan (keras_bridge/compile/metric_plan.py): which metric applies to which output, under which log name.

Covers ``metrics``/``weighted_metrics`` given as a list, a list of lists and a dict, for one and for
two outputs; Keras's log names (unprefixed for one output, ``<output>_<metric>`` for several,
``weighted_`` for a weighted metric that collides, ``_1`` for other duplicates), checked against the
names Keras 3 itself logs; ``base_names``; ``arguments``; which entries receive sample weights; and
the errors, each naming the argument.
"""

import keras
import numpy as np
import pytest
import torch

from keras_bridge.compile.metric_plan import MetricPlan, metric_name

NAMES = ["a", "b"]
# Output "a": one regression value; output "b": two-class probabilities with sparse labels.
Y_TRUE = [torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([0, 1, 1])]
Y_PRED = [torch.tensor([[1.0], [1.0], [0.0]]), torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])]


def built(metrics=None, weighted_metrics=None, names=NAMES, y_true=Y_TRUE, y_pred=Y_PRED):
    plan = MetricPlan(metrics, weighted_metrics)
    plan.build(names, y_true, y_pred)
    return plan


# (metrics, weighted_metrics, log names in compile order, base names). The two-output names are the ones
# keras.Model(x, [a, b]).evaluate(return_dict=True) logs (Keras 3.15), besides its loss entries.
TWO_OUTPUT_CASES = [
    (
        [["mae"], ["accuracy", "sparse_categorical_crossentropy"]],
        None,
        ["a_mae", "b_accuracy", "b_sparse_categorical_crossentropy"],
        ["mae", "accuracy", "sparse_categorical_crossentropy"],
    ),
    ({"b": "acc", "a": ["mse", "mae"]}, None, ["a_mse", "a_mae", "b_acc"], ["mse", "mae", "acc"]),
    (None, {"b": ["accuracy"]}, ["b_accuracy"], ["accuracy"]),
    ([["mae", "mae"], None], None, ["a_mae", "a_mae_1"], ["mae", "mae"]),
    ([["mae"], None], [["mae"], None], ["a_mae", "a_weighted_mae"], ["mae", "mae"]),
    ([["mae"], ["accuracy"]], {"a": "mse"}, ["a_mae", "b_accuracy", "a_mse"], ["mae", "accuracy", "mse"]),
]
TWO_OUTPUT_IDS = ["list-of-lists", "dict", "weighted-only", "duplicate", "weighted-collision", "mixed"]


@pytest.mark.parametrize(("metrics", "weighted_metrics", "names", "base_names"), TWO_OUTPUT_CASES, ids=TWO_OUTPUT_IDS)
def test_two_outputs_are_prefixed_with_the_output_name(metrics, weighted_metrics, names, base_names):
    plan = built(metrics, weighted_metrics)
    assert plan.names == names
    assert plan.base_names == base_names
    assert plan.built


def _keras_metric_log_names(metrics, weighted_metrics):
    inputs = keras.Input((2,), name="x")
    outputs = [keras.layers.Dense(1, name="a")(inputs), keras.layers.Dense(2, activation="softmax", name="b")(inputs)]
    model = keras.Model(inputs, outputs)
    model.compile(loss=["mse", "sparse_categorical_crossentropy"], metrics=metrics, weighted_metrics=weighted_metrics)
    x = np.zeros((3, 2), "float32")
    logs = model.evaluate(x, [y.numpy() for y in Y_TRUE], return_dict=True, verbose=0)
    return sorted(k for k in logs if k not in ("loss", "a_loss", "b_loss"))


@pytest.mark.parametrize(("metrics", "weighted_metrics"), [case[:2] for case in TWO_OUTPUT_CASES], ids=TWO_OUTPUT_IDS)
def test_two_output_names_are_the_ones_keras_logs(metrics, weighted_metrics):
    assert sorted(built(metrics, weighted_metrics).names) == _keras_metric_log_names(metrics, weighted_metrics)


@pytest.mark.parametrize(
    ("metrics", "weighted_metrics", "names"),
    [
        (["mae"], None, ["mae"]),
        ([["mae"], ["mse"]], None, ["mae", "mse"]),  # nested lists are flattened for one output
        ({"out": ["mae", "mse"]}, None, ["mae", "mse"]),
        (["mae", "mae"], ["mae"], ["mae", "mae_1", "weighted_mae"]),
        (None, ["mse"], ["mse"]),
        ([keras.metrics.MeanAbsoluteError(name="m")], None, ["m"]),
        ([keras.metrics.MeanAbsoluteError()], None, ["mean_absolute_error"]),
    ],
    ids=["list", "list-of-lists", "dict", "duplicates-and-weighted", "weighted-only", "named-object", "object"],
)
def test_one_output_is_not_prefixed(metrics, weighted_metrics, names):
    plan = built(metrics, weighted_metrics, names=["out"], y_true=Y_TRUE[:1], y_pred=Y_PRED[:1])
    assert plan.names == names


def test_one_output_names_are_the_ones_keras_logs():
    inputs = keras.Input((2,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(inputs))
    model.compile(loss="mse", metrics=["mae", "mae"], weighted_metrics=["mae"])
    logs = model.evaluate(np.zeros((3, 2), "float32"), Y_TRUE[0].numpy(), return_dict=True, verbose=0)
    plan = built(["mae", "mae"], ["mae"], names=["out"], y_true=Y_TRUE[:1], y_pred=Y_PRED[:1])
    assert sorted(plan.names) == sorted(k for k in logs if k != "loss")


def test_entries_know_their_output_and_whether_they_are_weighted():
    plan = built([["mae"], ["accuracy"]], {"a": "mse"})
    assert [(e.index, e.log_name, e.base_name, e.weighted) for e in plan.entries] == [
        (0, "a_mae", "mae", False),
        (1, "b_accuracy", "accuracy", False),
        (0, "a_mse", "mse", True),
    ]


def test_accuracy_follows_the_target_shapes_like_keras():
    # Keras picks binary / sparse categorical / categorical accuracy from the first batch's shapes.
    sparse = built([None, ["accuracy"]]).entries[0].metric
    sparse.update(Y_TRUE[1], Y_PRED[1])
    assert float(sparse.compute()) == pytest.approx(2 / 3)  # argmax 0, 1, 0 against labels 0, 1, 1
    one_hot = torch.nn.functional.one_hot(Y_TRUE[1], 2).float()
    categorical = built(["accuracy"], names=["b"], y_true=[one_hot], y_pred=Y_PRED[1:]).entries[0].metric
    categorical.update(one_hot, Y_PRED[1])
    assert float(categorical.compute()) == pytest.approx(2 / 3)
    binary_true, binary_pred = torch.tensor([[1.0], [0.0], [1.0], [0.0]]), torch.tensor([[0.7], [0.6], [0.2], [0.1]])
    binary = built(["acc"], names=["p"], y_true=[binary_true], y_pred=[binary_pred]).entries[0].metric
    binary.update(binary_true, binary_pred)
    assert float(binary.compute()) == pytest.approx(2 / 4)  # threshold 0.5: right on samples 0 and 3


def test_metric_values_by_hand():
    plan = built([["mae", "mse"], None])
    mae, mse = (e.metric for e in plan.entries)
    mae.update(Y_TRUE[0], Y_PRED[0])
    mse.update(Y_TRUE[0], Y_PRED[0])
    assert float(mae.compute()) == pytest.approx((1 + 0 + 2) / 3)
    assert float(mse.compute()) == pytest.approx((1 + 0 + 4) / 3)


def test_arguments_are_what_was_given():
    metrics, weighted = {"a": ["mae"]}, [["mse"], None]
    plan = MetricPlan(metrics, weighted)
    assert plan.arguments == {"metrics": metrics, "weighted_metrics": weighted}
    assert plan.arguments["metrics"] is metrics
    assert not plan.built and plan.entries == [] and plan.names == []
    assert MetricPlan().arguments == {"metrics": None, "weighted_metrics": None}


def test_metric_name_of_objects():
    assert metric_name(keras.metrics.AUC(name="roc")) == "roc"

    class TopFiveAccuracy:
        name = ""

    assert metric_name(TopFiveAccuracy()) == "top_five_accuracy"


@pytest.mark.parametrize(
    ("metrics", "weighted_metrics", "argument"),
    [("mae", None, "metrics"), (None, "mae", "weighted_metrics"), (keras.metrics.AUC(), None, "metrics")],
    ids=["string", "weighted-string", "object"],
)
def test_a_bare_metric_must_be_wrapped_in_a_list(metrics, weighted_metrics, argument):
    with pytest.raises(ValueError) as info:
        MetricPlan(metrics, weighted_metrics)
    assert f"`{argument}`" in str(info.value) and "Wrap it in a list" in str(info.value)


@pytest.mark.parametrize(
    ("metrics", "weighted_metrics", "fragments"),
    [
        (["mae"], None, ["`metrics`", "2 outputs", "['a', 'b']"]),
        (["mae", "mae", "mae"], None, ["`metrics`", "2 outputs"]),
        (None, ["mae"], ["`weighted_metrics`", "2 outputs"]),
        ({"c": ["mae"]}, None, ["`metrics`", "['c']", "['a', 'b']"]),
        (None, {"a": ["mae"], "z": "mse"}, ["`weighted_metrics`", "['z']"]),
    ],
    ids=["short-list", "long-list", "weighted-short-list", "unknown-key", "weighted-unknown-key"],
)
def test_metrics_that_do_not_fit_the_outputs(metrics, weighted_metrics, fragments):
    plan = MetricPlan(metrics, weighted_metrics)
    with pytest.raises(ValueError) as info:
        plan.build(NAMES, Y_TRUE, Y_PRED)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not plan.built


def test_unknown_metric_fails_at_construction():
    with pytest.raises(ValueError, match="maee"):
        MetricPlan([["mae"], ["maee"]])


@pytest.mark.parametrize("argument", ["metrics", "weighted_metrics"])
def test_a_metric_on_an_output_without_target(argument):
    plan = MetricPlan(**{argument: {"b": ["accuracy"]}})
    with pytest.raises(ValueError) as info:
        plan.build(NAMES, [Y_TRUE[0], None], Y_PRED)
    assert "'b'" in str(info.value) and f"`{argument}`" in str(info.value)
