"""LossPlan (keras_bridge/compile/loss_plan.py): which loss applies to which output with which weight.

Covers a single loss, lists and dicts (``None`` entries and outputs missing from a dict get no loss),
``loss_weights`` as a number, a list (one per output, or one per output with a loss) and a dict; the
weighted total and the unweighted per-output values against numbers computed by hand and by
``keras.losses``; ``tracker_names``; ``arguments``; and the errors for bad arguments, each naming the
argument it is about.
"""

import keras
import pytest
import torch

from keras_bridge.compile.loss_plan import LossPlan
from keras_bridge.compile.structure import OutputStructure

NAMES = ["a", "b"]
# Output "a": a regression target; output "b": two-class probabilities with sparse labels.
Y_TRUE_A = torch.tensor([[0.0], [1.0], [2.0]])
Y_PRED_A = torch.tensor([[1.0], [1.0], [0.0]])
MSE_A = (1.0 + 0.0 + 4.0) / 3  # mean of the squared errors 1, 0, 4
MAE_A = (1.0 + 0.0 + 2.0) / 3  # mean of the absolute errors 1, 0, 2
Y_TRUE_B = torch.tensor([0, 1, 1])
Y_PRED_B = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
Y_TRUE = [Y_TRUE_A, Y_TRUE_B]
Y_PRED = [Y_PRED_A, Y_PRED_B]
NO_WEIGHTS = [None, None]


def built(loss, loss_weights=None, names=NAMES):
    plan = LossPlan(loss, loss_weights)
    plan.build(names)
    return plan


def keras_value(loss, y_true, y_pred, sample_weight=None):
    return float(loss(y_true, y_pred, sample_weight=sample_weight))


def test_single_loss_on_a_single_output():
    plan = built("mse", names=["out"])
    assert [(t.index, t.output_name, t.weight) for t in plan.terms] == [(0, "out", 1.0)]
    assert plan.built and plan.tracker_names == []
    total, values = plan([Y_TRUE_A], [Y_PRED_A], [None])
    assert float(total) == pytest.approx(MSE_A)
    assert [float(v) for v in values] == pytest.approx([MSE_A])
    assert float(total) == pytest.approx(keras_value(keras.losses.MeanSquaredError(), Y_TRUE_A, Y_PRED_A))


def test_single_loss_is_applied_to_every_output():
    plan = built("mae", names=["a", "c"])
    assert [(t.index, t.output_name, t.weight) for t in plan.terms] == [(0, "a", 1.0), (1, "c", 1.0)]
    assert plan.tracker_names == ["a_loss", "c_loss"]
    other_true, other_pred = torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 4.0]])  # MAE (1 + 2) / 2
    total, values = plan([Y_TRUE_A, other_true], [Y_PRED_A, other_pred], NO_WEIGHTS)
    assert [float(v) for v in values] == pytest.approx([MAE_A, 1.5])
    assert float(total) == pytest.approx(MAE_A + 1.5)


def test_list_of_losses_against_keras():
    plan = built(["mse", "sparse_categorical_crossentropy"])
    assert [t.output_name for t in plan.terms] == NAMES
    assert [t.loss.name for t in plan.terms] == ["mse", "sparse_categorical_crossentropy"]  # a string keeps its name
    total, values = plan(Y_TRUE, Y_PRED, NO_WEIGHTS)
    expected_b = keras_value(keras.losses.SparseCategoricalCrossentropy(), Y_TRUE_B, Y_PRED_B)
    assert [float(v) for v in values] == pytest.approx([MSE_A, expected_b], rel=1e-6)
    assert float(total) == pytest.approx(MSE_A + expected_b, rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [["mse", None], {"a": "mse"}, {"a": "mse", "b": None}],
    ids=["list-with-None", "dict-missing-output", "dict-with-None"],
)
def test_outputs_without_a_loss_get_no_term(loss):
    plan = built(loss)
    assert [(t.index, t.output_name) for t in plan.terms] == [(0, "a")]
    assert plan.tracker_names == []  # one term: no per-output trackers, as in Keras
    total, values = plan([Y_TRUE_A, None], Y_PRED, NO_WEIGHTS)  # no target needed without a loss
    assert float(total) == pytest.approx(MSE_A) and len(values) == 1


def test_dict_follows_the_output_names_not_its_own_order():
    plan = built({"b": "sparse_categorical_crossentropy", "a": "mae"})
    assert [(t.index, t.output_name, t.loss.name) for t in plan.terms] == [
        (0, "a", "mae"),
        (1, "b", "sparse_categorical_crossentropy"),
    ]
    assert plan.tracker_names == ["a_loss", "b_loss"]


def test_no_loss_at_all():
    plan = built(None)
    assert plan.terms == [] and plan.tracker_names == []
    assert plan(Y_TRUE, Y_PRED, NO_WEIGHTS) == (None, [])


@pytest.mark.parametrize(
    ("loss", "loss_weights", "weights"),
    [
        (["mse", "mae"], None, [1.0, 1.0]),
        (["mse", "mae"], 3.0, [3.0, 3.0]),
        (["mse", "mae"], 2, [2.0, 2.0]),
        (["mse", "mae"], [2.0, 0.5], [2.0, 0.5]),
        (["mse", "mae"], [None, 0.5], [1.0, 0.5]),
        (["mse", "mae"], {"b": 0.25}, [1.0, 0.25]),
        (["mse", "mae"], {"a": 4.0, "b": 0.25}, [4.0, 0.25]),
        ([None, "mae"], [0.5], [0.5]),  # one weight per output that has a loss
        ({"b": "mae"}, [7.0, 0.5], [0.5]),  # one weight per output
    ],
    ids=["none", "number", "int", "list", "list-with-None", "dict-partial", "dict", "list-per-loss", "list-per-output"],
)
def test_loss_weights(loss, loss_weights, weights):
    plan = built(loss, loss_weights)
    assert [t.weight for t in plan.terms] == weights
    assert all(isinstance(t.weight, float) for t in plan.terms)


def test_total_is_weighted_and_values_are_not():
    y_true_b, y_pred_b = torch.tensor([[1.0], [1.0], [1.0]]), torch.tensor([[1.0], [3.0], [1.0]])
    plan = built(["mse", "mae"], {"a": 2.0, "b": 0.5})
    total, values = plan([Y_TRUE_A, y_true_b], [Y_PRED_A, y_pred_b], NO_WEIGHTS)
    mae_b = 2.0 / 3
    assert [float(v) for v in values] == pytest.approx([MSE_A, mae_b])
    assert float(total) == pytest.approx(2.0 * MSE_A + 0.5 * mae_b)


def test_sample_weights_go_to_their_output():
    sw = torch.tensor([1.0, 0.0, 2.0])
    plan = built(["mse", "sparse_categorical_crossentropy"], [1.0, 3.0])
    total, values = plan(Y_TRUE, Y_PRED, [sw, None])
    # Keras's "sum_over_batch_size": sum(w * l) / batch size = (1*1 + 0*0 + 2*4) / 3
    assert float(values[0]) == pytest.approx(9.0 / 3)
    assert float(values[0]) == pytest.approx(keras_value(keras.losses.MeanSquaredError(), Y_TRUE_A, Y_PRED_A, sw))
    expected_b = keras_value(keras.losses.SparseCategoricalCrossentropy(), Y_TRUE_B, Y_PRED_B)
    assert float(values[1]) == pytest.approx(expected_b, rel=1e-6)
    assert float(total) == pytest.approx(3.0 + 3.0 * expected_b, rel=1e-6)


def test_total_is_differentiable():
    pred = Y_PRED_A.clone().requires_grad_(True)
    total, _ = built("mse", 2.0, names=["out"])([Y_TRUE_A], [pred], [None])
    total.backward()
    # d/dp of 2 * mean((p - t)^2) = 4 (p - t) / n
    torch.testing.assert_close(pred.grad, 4.0 * (Y_PRED_A - Y_TRUE_A) / 3)


def test_arguments_are_what_was_given():
    loss, weights = {"a": "mse", "b": None}, {"a": 2.0}
    plan = LossPlan(loss, weights)
    assert plan.arguments == {"loss": loss, "loss_weights": weights}
    assert plan.arguments["loss"] is loss
    assert not plan.built and plan.terms == []


@pytest.mark.parametrize(
    ("loss", "loss_weights", "error", "fragments"),
    [
        ("mse", "x", TypeError, ["`loss_weights`", "'x'", "str"]),
        ("mse", (1.0, "a"), TypeError, ["`loss_weights`", "'a'"]),
        ("mse", {"a": "heavy"}, TypeError, ["`loss_weights`", "'heavy'"]),
        ("mse", torch.tensor(1.0), TypeError, ["`loss_weights`", "Tensor"]),
        ("msee", None, ValueError, ["`loss`", "'msee'", "'mse'"]),
        (42, None, TypeError, ["`loss`", "42", "int"]),
    ],
    ids=["weights-string", "weights-list-entry", "weights-dict-entry", "weights-tensor", "unknown-loss", "not-a-loss"],
)
def test_bad_arguments_fail_at_construction(loss, loss_weights, error, fragments):
    with pytest.raises(error) as info:
        LossPlan(loss, loss_weights)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("loss", "loss_weights", "fragments"),
    [
        ({"c": "mse"}, None, ["`loss`", "['c']", "['a', 'b']"]),
        ({"a": "mse"}, {"a": 1.0, "c": 2.0}, ["`loss_weights`", "['c']", "['a', 'b']"]),
        (["mse"], None, ["`loss`", "1 entries", "2 outputs"]),
        (["mse", "mae", "mse"], None, ["`loss`", "3 entries", "2 outputs"]),
        ("mse", [1.0, 2.0, 3.0], ["`loss_weights`", "3 entries", "2 outputs"]),
        ([None, "mse"], [1.0, 2.0, 3.0], ["`loss_weights`", "3 entries", "1 with a loss"]),
    ],
    ids=[
        "unknown-loss-key",
        "unknown-weight-key",
        "short-loss-list",
        "long-loss-list",
        "long-weight-list",
        "weight-list-fits-nothing",
    ],
)
def test_arguments_that_do_not_fit_the_outputs_fail_at_build(loss, loss_weights, fragments):
    plan = LossPlan(loss, loss_weights)
    with pytest.raises(ValueError) as info:
        plan.build(NAMES)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert not plan.built


def test_check_names_refuses_a_dict_that_fits_no_output_before_build():
    plan = LossPlan({"z": "mae"})
    plan.check_names(["a", "z"])
    with pytest.raises(ValueError, match=r"Unknown output name\(s\) \['z'\] in `loss`") as info:
        plan.check_names(NAMES)
    assert "Expected keys ['a', 'b'] in loss dict, but found loss.keys()=['z']" in str(info.value)  # Keras's text


def test_check_names_leaves_a_partly_known_dict_to_build():
    # Keras's error depends on the output structure, known at build: a KeyError for a dict output...
    plan = LossPlan({"a": "mse", "z": "mae"})
    plan.check_names(NAMES)
    with pytest.raises(KeyError, match=r"The path: \('z',\) in the `loss` argument, can't be found"):
        plan.build(OutputStructure({"a": None, "b": None}))
    # ... and Keras's "Expected keys" ValueError for outputs that are not a dict.
    expected = r"Expected keys \['a', 'b'\] in loss dict, but found loss.keys\(\)=\['a', 'z'\]"
    with pytest.raises(ValueError, match=expected):
        plan.build(OutputStructure([None, None], NAMES))


def test_missing_target_for_an_output_with_a_loss_names_the_output():
    plan = built(["mse", "sparse_categorical_crossentropy"])
    with pytest.raises(ValueError, match="'b' has a loss but no target"):
        plan([Y_TRUE_A, None], Y_PRED, NO_WEIGHTS)
