"""get_metric / BridgeMetric against Keras's own metrics (expected numbers computed by Keras here)."""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics.utilities.data import dim_zero_sum

from keras_bridge.compile.metrics import functional as metric_fns
from keras_bridge.compile.metrics.stateful import (
    BridgeMetric,
    KerasMetricWrapper,
    Mean,
    MeanMetricWrapper,
    RootMeanSquaredError,
    TorchmetricsWrapper,
    check_metric,
    get_metric,
)  # fmt: skip
from keras_bridge.utils.keras import import_keras

keras = import_keras()
compile_utils = keras.src.trainers.compile_utils

B, T, C, D = 8, 3, 6, 3
N_BATCHES = 3


def _batches(kind, seed=0):
    """Three batches (y_true, y_pred, sample_weight) of one data kind."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    out = []
    for _ in range(N_BATCHES):
        if kind == "reg":
            yt, yp = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
        elif kind == "reg1":
            yt, yp = torch.randn(B, 1, generator=g), torch.randn(B, 1, generator=g)
        elif kind == "reg_temporal":
            yt, yp = torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g)
        elif kind == "positive":
            yt, yp = rand(B, D) + 0.1, rand(B, D) + 0.1
        elif kind == "binary":
            yt, yp = torch.randint(0, 2, (B, 1), generator=g).float(), rand(B, 1)
        elif kind == "binary_int":
            yt, yp = torch.randint(0, 2, (B, 1), generator=g), rand(B, 1)
        elif kind == "binary_logits":
            yt, yp = torch.randint(0, 2, (B, 1), generator=g).float(), torch.randn(B, 1, generator=g) * 2
        elif kind == "multilabel":
            yt, yp = torch.randint(0, 2, (B, C), generator=g).float(), rand(B, C)
        elif kind == "onehot":
            yt = F.one_hot(torch.randint(0, C, (B,), generator=g), C).float()
            yp = torch.softmax(torch.randn(B, C, generator=g), -1)
        elif kind == "onehot_logits":
            yt, yp = F.one_hot(torch.randint(0, C, (B,), generator=g), C).float(), torch.randn(B, C, generator=g)
        elif kind == "sparse":
            yt, yp = torch.randint(0, C, (B,), generator=g), torch.softmax(torch.randn(B, C, generator=g), -1)
        elif kind == "sparse_n1":
            yt, yp = torch.randint(0, C, (B, 1), generator=g), torch.softmax(torch.randn(B, C, generator=g), -1)
        elif kind == "sparse_temporal":
            yt, yp = torch.randint(0, C, (B, T), generator=g), torch.softmax(torch.randn(B, T, C, generator=g), -1)
        elif kind == "int_equal":
            yt, yp = torch.randint(0, 3, (B, 1), generator=g).float(), torch.randint(0, 3, (B, 1), generator=g).float()
        elif kind == "classes":  # MeanIoU: integer predictions
            yt, yp = torch.randint(0, 3, (B,), generator=g), torch.randint(0, 3, (B,), generator=g)
        else:
            raise KeyError(kind)
        sw = rand(B, T) if yp.dim() == 3 else rand(B)
        sw[0] = 0.0
        out.append((yt, yp, sw))
    return out


def _run_pair(identifier, kind, weighted, make=None, seed=0):
    batches = _batches(kind, seed)
    yt0, yp0, _ = batches[0]
    identifier = make() if make else identifier  # one object for both: Keras auto-names instances uniquely
    ref = compile_utils.get_metric(identifier, yt0, yp0)
    ours = get_metric(identifier, yt0, yp0)
    for yt, yp, sw in batches:
        w = sw if weighted else None
        ref.update_state(yt, yp, sample_weight=None if w is None else w.clone())
        ours.update(yt, yp, w)
    return ours, ref


STRING_CASES = [
    ("accuracy", "binary"), ("acc", "sparse"), ("Accuracy", "onehot"), ("ACC", "sparse_n1"), ("acc", "sparse_temporal"),
    ("accuracy", "reg1"), ("binary_accuracy", "binary_int"), ("BinaryAccuracy", "multilabel"),
    ("categorical_accuracy", "onehot"), ("sparse_categorical_accuracy", "sparse_n1"),
    ("sparse_top_k_categorical_accuracy", "sparse"), ("top_k_categorical_accuracy", "onehot"),
    ("mse", "reg"), ("MSE", "reg_temporal"), ("mae", "reg"), ("mape", "reg"), ("msle", "positive"), ("MSLE", "reg"),
    ("mean_squared_error", "reg1"), ("root_mean_squared_error", "reg"), ("RootMeanSquaredError", "reg_temporal"),
    ("cosine_similarity", "reg"), ("log_cosh_error", "reg"), ("LogCoshError", "reg_temporal"),
    ("bce", "binary"), ("binary_crossentropy", "multilabel"), ("categorical_crossentropy", "onehot"),
    ("sparse_categorical_crossentropy", "sparse_n1"), ("SparseCategoricalCrossentropy", "sparse_temporal"),
    ("hinge", "binary"), ("squared_hinge", "reg"), ("categorical_hinge", "onehot"), ("kl_divergence", "onehot"),
    ("poisson", "positive"), ("pearson_correlation", "reg"),
    # generic wrapper
    ("precision", "binary"), ("Recall", "binary"), ("auc", "binary"), ("r2_score", "reg"), ("true_positives", "binary"),
    ("f1_score", "multilabel"), ("FalseNegatives", "binary"),
]  # fmt: skip


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("identifier,kind", STRING_CASES)
def test_string_metrics_match_keras(identifier, kind, weighted):
    ours, ref = _run_pair(identifier, kind, weighted)
    assert isinstance(ours, BridgeMetric)
    assert ours.name == ref.name == identifier
    assert ours.direction == getattr(ref, "_direction", None)
    torch.testing.assert_close(ours.compute().double(), torch.as_tensor(ref.result()).double(), rtol=1e-5, atol=1e-6)


OBJECT_CASES = [
    (lambda: keras.metrics.SparseCategoricalAccuracy(), "sparse"),
    (lambda: keras.metrics.BinaryAccuracy(threshold=0.3), "binary"),
    (lambda: keras.metrics.TopKCategoricalAccuracy(k=2), "onehot"),
    (lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2"), "sparse_n1"),
    (lambda: keras.metrics.SparseTopKCategoricalAccuracy(k=2), "sparse_temporal"),
    (lambda: keras.metrics.Accuracy(), "int_equal"),
    (lambda: keras.metrics.CosineSimilarity(axis=-1), "reg_temporal"),
    (lambda: keras.metrics.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), "binary_logits"),
    (lambda: keras.metrics.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), "onehot_logits"),
    (lambda: keras.metrics.SparseCategoricalCrossentropy(from_logits=True), "sparse_n1"),
    (lambda: keras.metrics.SparseCategoricalCrossentropy(ignore_class=0), "sparse"),
    (lambda: keras.metrics.RootMeanSquaredError(name="rmse"), "reg"),
    (lambda: keras.metrics.MeanMetricWrapper(keras.losses.huber, name="hub", delta=0.5), "reg"),
    (lambda: keras.metrics.ConcordanceCorrelation(), "reg"),
    (lambda: keras.metrics.Precision(thresholds=[0.3, 0.6]), "binary"),
    (lambda: keras.metrics.Recall(class_id=1), "multilabel"),
    (lambda: keras.metrics.AUC(num_thresholds=50, curve="PR"), "binary"),
    (lambda: keras.metrics.AUC(multi_label=True, num_labels=C), "multilabel"),
    (lambda: keras.metrics.F1Score(average="macro", threshold=0.5), "multilabel"),
    (lambda: keras.metrics.MeanIoU(num_classes=3), "classes"),
    (lambda: keras.metrics.R2Score(class_aggregation="variance_weighted_average"), "reg"),
    (lambda: keras.metrics.binary_accuracy, "binary"),
    (lambda: keras.losses.mean_squared_error, "reg"),
    (lambda: keras.metrics.MeanAbsoluteError, "reg"),  # a class
    (lambda: {"class_name": "BinaryAccuracy", "config": {"threshold": 0.7}}, "binary"),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:You are passing weight as `float`")  # Keras's own MeanIoU warning
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("make,kind", OBJECT_CASES)
def test_keras_objects_match_keras(make, kind, weighted):
    ours, ref = _run_pair(None, kind, weighted, make=make, seed=4)
    assert ours.name == ref.name
    assert ours.direction == getattr(ref, "_direction", None)
    torch.testing.assert_close(ours.compute().double(), torch.as_tensor(ref.result()).double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.local_compute(), ours.compute())


def mean_abs_diff(y_true, y_pred):
    return (y_true - y_pred).abs().mean(-1)


def KerasOpsMetric(y_true, y_pred):  # noqa: N802  (CamelCase on purpose: the name gets snake_cased)
    return keras.ops.max(keras.ops.abs(y_true - y_pred), axis=-1)


@pytest.mark.parametrize("fn", [mean_abs_diff, KerasOpsMetric])
@pytest.mark.parametrize("weighted", [False, True])
def test_functions_are_mean_wrapped_and_snake_named(fn, weighted):
    ours, ref = _run_pair(fn, "reg", weighted)
    assert (
        ours.name == ref.name == {"mean_abs_diff": "mean_abs_diff", "KerasOpsMetric": "keras_ops_metric"}[fn.__name__]
    )
    torch.testing.assert_close(ours.compute(), torch.as_tensor(ref.result()), rtol=1e-5, atol=1e-6)


def test_crossentropy_string_resolves_like_accuracy():
    """Keras 3 only special-cases "accuracy"; "crossentropy"/"ce" is our (tf.keras-style) extension."""
    cases = [("crossentropy", "binary", "BinaryCrossentropy"), ("ce", "sparse_n1", "SparseCategoricalCrossentropy"),
             ("CE", "onehot", "CategoricalCrossentropy")]  # fmt: skip
    for ident, kind, cls in cases:
        batches = _batches(kind)
        ours = get_metric(ident, batches[0][0], batches[0][1])
        ref = getattr(keras.metrics, cls)()
        for yt, yp, sw in batches:
            ours.update(yt, yp, sw)
            ref.update_state(yt, yp, sample_weight=sw)
        assert ours.name == ident and ours.direction == "down"
        torch.testing.assert_close(ours.compute(), torch.as_tensor(ref.result()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "true_shape,pred_shape,expected",
    [((B, 1), (B, 1), "binary"), ((B,), (B, 1), "binary"), ((B,), (B, C), "sparse"), ((B, 1), (B, C), "sparse"),
     ((B, T), (B, T, C), "sparse"), ((B, C), (B, C), "categorical"), ((B, T, C), (B, T, C), "categorical")],
)  # fmt: skip
def test_accuracy_resolution_table(true_shape, pred_shape, expected):
    y_true, y_pred = torch.zeros(true_shape), torch.rand(pred_shape)
    fn = {
        "binary": metric_fns.binary_accuracy,
        "sparse": metric_fns.sparse_categorical_accuracy,
        "categorical": metric_fns.categorical_accuracy,
    }
    ref_cls = {"binary": "BinaryAccuracy", "sparse": "SparseCategoricalAccuracy", "categorical": "CategoricalAccuracy"}
    for ident in ["accuracy", "acc", "Acc"]:
        ours = get_metric(ident, y_true, y_pred)
        assert isinstance(ours, MeanMetricWrapper) and ours.fn is fn[expected] and ours.name == ident
        assert type(compile_utils.get_metric(ident, y_true, y_pred)).__name__ == ref_cls[expected]
        # Resolved without keras, the string gives what Keras's own metric object gives.
        keras_object = get_metric(getattr(keras.metrics, ref_cls[expected])(name=ident), y_true, y_pred)
        assert (ours.fn, ours.fn_kwargs, ours.direction, ours.state_dtype) == (
            keras_object.fn, keras_object.fn_kwargs, keras_object.direction, keras_object.state_dtype
        )  # fmt: skip
    assert get_metric("accuracy", y_true, y_pred).fn_kwargs.get("threshold", 0.5) == 0.5


def test_names_and_classes():
    yt, yp = torch.zeros(B, 1), torch.rand(B, C)
    assert get_metric("acc", yt, yp).name == "acc"
    assert get_metric(keras.metrics.SparseCategoricalAccuracy(), yt, yp).name == "sparse_categorical_accuracy"
    assert get_metric("MeanSquaredError", yt, yp).name == "MeanSquaredError"
    assert get_metric(mean_abs_diff, yt, yp).name == "mean_abs_diff"
    assert isinstance(get_metric("root_mean_squared_error", yt, yp), RootMeanSquaredError)
    assert isinstance(get_metric("precision", yt, yp[:, :1]), KerasMetricWrapper)
    assert get_metric(keras.losses.mean_squared_error, yt, yp).direction == "down"
    assert get_metric(mean_abs_diff, yt, yp).direction is None


def test_states_are_sum_reduced_and_deepcopy_safe():
    yt, yp = torch.randint(0, 2, (B, 1)).float(), torch.rand(B, 1)
    for ident in ["acc", "mse", "root_mean_squared_error", "auc", keras.metrics.F1Score(), keras.metrics.R2Score()]:
        m = get_metric(ident, yt, yp)
        assert m._reductions and all(fx is dim_zero_sum for fx in m._reductions.values()), ident
        clone = copy.deepcopy(m)
        m.update(yt, yp)
        clone.update(yt, yp)
        clone.update(yt, yp)
        states = lambda x: torch.cat([getattr(x, n).reshape(-1).double() for n in x._defaults])  # noqa: E731
        torch.testing.assert_close(states(clone), 2 * states(m), msg=str(ident))


def test_local_compute_does_not_disturb_compute_cache():
    batches = _batches("binary")
    m = get_metric("acc", batches[0][0], batches[0][1])
    m.update(*batches[0][:2])
    first = m.compute()
    m.update(*batches[1][:2])
    local = m.local_compute()
    assert m._computed is None  # compute() will recompute, not return the cached first value
    torch.testing.assert_close(m.compute(), local)
    m.reset()
    m.update(*batches[2][:2])
    assert m.local_compute().shape == () and first.shape == ()


@pytest.mark.parametrize("weighted", [False, True])
def test_mean_tracker_matches_keras_mean(weighted):
    ours, ref = Mean(name="loss"), keras.metrics.Mean(name="loss")
    for value, n in [(2.0, 4), (3.0, 4), (10.0, 2)]:
        ours.update(torch.tensor(value), sample_weight=n)
        ref.update_state(value, sample_weight=n)
    values = torch.rand(B, T)
    sw = torch.rand(B) if weighted else None
    ours.update(values, sw)
    ref.update_state(values, sample_weight=sw)
    assert ours.name == "loss"
    torch.testing.assert_close(ours.compute(), torch.as_tensor(ref.result()), rtol=1e-6, atol=1e-7)
    empty = Mean()
    assert float(empty.local_compute()) == 0.0


def test_torchmetrics_objects_are_wrapped():
    tm = torchmetrics.MeanSquaredError()
    yt, yp = torch.randn(B), torch.randn(B)
    m = get_metric(tm, yt, yp)
    assert isinstance(m, TorchmetricsWrapper) and m.metric is tm
    assert m.name == "mean_squared_error" and m.direction == "down"
    m.update(yt, yp)  # bridge order (y_true, y_pred) -> torchmetrics order (preds, target)
    with pytest.warns(UserWarning, match="sample weights"):
        m.update(yt, 2 * yp, torch.ones(B))
    expected = torchmetrics.functional.mean_squared_error(torch.cat([yp, 2 * yp]), torch.cat([yt, yt]))
    torch.testing.assert_close(m.compute(), expected)
    torch.testing.assert_close(m.local_compute(), expected)
    named = torchmetrics.classification.BinaryAccuracy()
    named.name = "my_acc"
    assert get_metric(named, yt, yp).name == "my_acc"
    m.reset()
    assert tm._update_count == 0


@pytest.mark.parametrize(
    "bad,exc,echo",
    [("nope", ValueError, "'nope'"), ("mean", ValueError, "'mean'"), ("kld", ValueError, "'kld'"),
     (3, TypeError, "3"), (None, ValueError, "None"), (int, TypeError, "int")],
)  # fmt: skip
def test_check_metric_errors_name_the_argument_and_echo_the_value(bad, exc, echo):
    with pytest.raises(exc) as info:
        check_metric(bad)
    assert "`metrics`" in str(info.value) and echo in str(info.value)
    with pytest.raises(exc, match="`weighted_metrics`"):
        get_metric(bad, torch.zeros(B, 1), torch.zeros(B, 1), argument="weighted_metrics")
    for good in [
        "acc",
        "ACCURACY",
        "ce",
        "mse",
        "MeanIoU",
        keras.metrics.AUC(),
        torchmetrics.MeanMetric(),
        mean_abs_diff,
    ]:
        check_metric(good)
