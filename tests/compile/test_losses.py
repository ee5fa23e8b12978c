"""get_loss / LossTerm against Keras's own losses (expected numbers computed by Keras here)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from keras_bridge.compile.losses.terms import AutoCrossentropy, KerasLossTerm, TorchLossTerm, get_loss
from keras_bridge.utils.keras import import_keras

keras = import_keras()
compile_utils = keras.src.trainers.compile_utils

B, T, C, D = 6, 4, 5, 3
RTOL, ATOL = 1e-5, 1e-6


def _data(kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    if kind == "reg":
        return torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if kind == "reg_temporal":
        return torch.randn(B, T, D, generator=g), torch.randn(B, T, D, generator=g)
    if kind == "positive":
        return rand(B, D) + 0.1, rand(B, D) + 0.1
    if kind == "binary":
        return torch.randint(0, 2, (B, 1), generator=g).float(), rand(B, 1) * 0.98 + 0.01
    if kind == "binary_int_rank1":
        return torch.randint(0, 2, (B,), generator=g), rand(B, 1) * 0.98 + 0.01
    if kind == "binary_logits":
        return torch.randint(0, 2, (B, 1), generator=g).float(), torch.randn(B, 1, generator=g) * 3
    if kind == "multilabel":
        return torch.randint(0, 2, (B, C), generator=g).float(), rand(B, C) * 0.98 + 0.01
    if kind == "pm1":
        return torch.randint(0, 2, (B, D), generator=g).float() * 2 - 1, torch.randn(B, D, generator=g)
    if kind == "onehot":
        return F.one_hot(torch.randint(0, C, (B,), generator=g), C).float(), torch.softmax(
            torch.randn(B, C, generator=g), -1
        )
    if kind == "onehot_logits":
        return F.one_hot(torch.randint(0, C, (B,), generator=g), C).float(), torch.randn(B, C, generator=g) * 2
    if kind == "sparse":
        return torch.randint(0, C, (B,), generator=g), torch.softmax(torch.randn(B, C, generator=g), -1)
    if kind == "sparse_n1":
        return torch.randint(0, C, (B, 1), generator=g), torch.softmax(torch.randn(B, C, generator=g), -1)
    if kind == "sparse_logits":
        return torch.randint(0, C, (B, 1), generator=g), torch.randn(B, C, generator=g) * 2
    if kind == "sparse_temporal":
        return torch.randint(0, C, (B, T), generator=g), torch.softmax(torch.randn(B, T, C, generator=g), -1)
    if kind == "float64":
        return torch.randn(B, D, generator=g).double(), torch.randn(B, D, generator=g).double()
    raise KeyError(kind)


def _weights(kind, y_pred):
    temporal = y_pred.dim() == 3
    if kind is None:
        return None
    if kind == "vector":  # (B,) with zeros
        return torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 3.0])
    if kind == "matrix":  # (B, T) for temporal losses, (B, 1) otherwise
        g = torch.Generator().manual_seed(7)
        w = torch.rand(B, T if temporal else 1, generator=g)
        w[0] = 0.0
        return w
    raise KeyError(kind)


def _mirror(ours, ref, y_true, y_pred, sw):
    """Compare value and gradient with Keras; where Keras raises, ours must raise too."""
    yp_k = y_pred.clone().requires_grad_(y_pred.is_floating_point())
    try:  # a clone: Keras's apply_mask multiplies the weights in place
        expected = ref(y_true, yp_k, sample_weight=None if sw is None else sw.clone())
    except Exception:
        with pytest.raises(Exception):
            ours(y_true, y_pred, sw)
        return
    yp_o = y_pred.clone().requires_grad_(y_pred.is_floating_point())
    got = ours(y_true, yp_o, sw)
    assert got.shape == expected.shape
    torch.testing.assert_close(got.detach().double(), expected.detach().double(), rtol=RTOL, atol=ATOL)
    if expected.dim() == 0 and expected.requires_grad:
        expected.backward()
        got.backward()
        assert yp_o.grad is not None
        torch.testing.assert_close(yp_o.grad.double(), yp_k.grad.double(), rtol=1e-4, atol=1e-6)


STRING_CASES = [
    ("mse", "reg"), ("MSE", "reg_temporal"), ("mae", "reg"), ("MAE", "reg_temporal"), ("mape", "reg"),
    ("msle", "positive"), ("MSLE", "reg"), ("mean_squared_error", "float64"), ("MeanSquaredError", "reg"),
    ("huber", "reg"), ("Huber", "reg_temporal"), ("log_cosh", "reg"), ("LogCosh", "reg"),
    ("hinge", "binary"), ("hinge", "pm1"), ("squared_hinge", "pm1"), ("SquaredHinge", "binary"),
    ("categorical_hinge", "onehot"), ("kld", "onehot"), ("KLD", "positive"), ("kl_divergence", "onehot"),
    ("poisson", "positive"), ("Poisson", "positive"), ("cosine_similarity", "reg"),
    ("CosineSimilarity", "reg_temporal"), ("bce", "binary"), ("BCE", "binary_int_rank1"),
    ("binary_crossentropy", "multilabel"), ("BinaryCrossentropy", "binary"),
    ("categorical_crossentropy", "onehot"), ("CategoricalCrossentropy", "onehot"),
    ("sparse_categorical_crossentropy", "sparse"), ("sparse_categorical_crossentropy", "sparse_n1"),
    ("SparseCategoricalCrossentropy", "sparse_temporal"),
    ("crossentropy", "binary"), ("ce", "sparse"), ("CE", "sparse_n1"), ("crossentropy", "onehot"),
    ("crossentropy", "sparse_temporal"),
    # Keras losses without a native twin (run through Keras ops)
    ("binary_focal_crossentropy", "binary"), ("CategoricalFocalCrossentropy", "onehot"), ("dice", "multilabel"),
    ("Tversky", "multilabel"),
]  # fmt: skip


@pytest.mark.parametrize("weights", [None, "vector", "matrix"])
@pytest.mark.parametrize("identifier,kind", STRING_CASES)
def test_string_identifiers_match_keras(identifier, kind, weights):
    y_true, y_pred = _data(kind)
    ref = compile_utils.get_loss(identifier, y_true, y_pred)
    ours = get_loss(identifier)
    assert ours.name == ref.name
    _mirror(ours, ref, y_true, y_pred, _weights(weights, y_pred))


OBJECT_CASES = [
    (lambda: keras.losses.BinaryCrossentropy(from_logits=True), "binary_logits"),
    (lambda: keras.losses.BinaryCrossentropy(label_smoothing=0.1), "binary"),
    (lambda: keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2), "multilabel"),
    (lambda: keras.losses.CategoricalCrossentropy(from_logits=True), "onehot_logits"),
    (lambda: keras.losses.CategoricalCrossentropy(label_smoothing=0.2), "onehot"),
    (
        lambda: keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, name="cce_ls"),
        "onehot_logits",
    ),
    (lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True), "sparse_logits"),
    (lambda: keras.losses.SparseCategoricalCrossentropy(ignore_class=0), "sparse"),
    (lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1), "sparse_temporal"),
    (lambda: keras.losses.Huber(delta=0.3), "reg"),
    (lambda: keras.losses.CosineSimilarity(axis=0), "reg"),
    (lambda: keras.losses.MeanSquaredError(reduction="sum"), "reg_temporal"),
    (lambda: keras.losses.MeanAbsoluteError(reduction="mean_with_sample_weight"), "reg"),
    (lambda: keras.losses.MeanSquaredError(reduction=None), "reg"),
    (lambda: keras.losses.MeanSquaredError(reduction="none"), "reg_temporal"),
    (lambda: keras.losses.Hinge(reduction="mean"), "pm1"),
    (lambda: keras.losses.KLDivergence(), "onehot"),
    (lambda: keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, from_logits=True), "binary_logits"),
    (lambda: keras.losses.mean_squared_error, "reg"),
    (lambda: keras.losses.binary_crossentropy, "binary"),
    (lambda: keras.losses.sparse_categorical_crossentropy, "sparse_n1"),
    (lambda: keras.losses.MeanAbsolutePercentageError, "reg"),  # a class
    (lambda: {"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}, "onehot_logits"),
]  # fmt: skip


@pytest.mark.parametrize("weights", [None, "vector", "matrix"])
@pytest.mark.parametrize("make,kind", OBJECT_CASES)
def test_keras_objects_match_keras(make, kind, weights):
    y_true, y_pred = _data(kind, seed=3)
    ref = compile_utils.get_loss(make(), y_true, y_pred)
    ours = get_loss(make())
    assert ours.name == ref.name
    _mirror(ours, ref, y_true, y_pred, _weights(weights, y_pred))


def my_abs_loss(y_true, y_pred):
    return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)


def torch_square_loss(y_true, y_pred):
    return ((y_true - y_pred) ** 2).sum(dim=-1)


@pytest.mark.parametrize("fn", [my_abs_loss, torch_square_loss, lambda t, p: (t - p).abs().amax(-1)])
@pytest.mark.parametrize("weights", [None, "vector"])
def test_plain_callables_are_wrapped_like_keras(fn, weights):
    y_true, y_pred = _data("reg", seed=5)
    ref = compile_utils.get_loss(fn, y_true, y_pred)
    ours = get_loss(fn)
    assert ours.name == ref.name
    _mirror(ours, ref, y_true, y_pred, _weights(weights, y_pred))


def test_names():
    assert get_loss("mse").name == "mse"
    assert get_loss("MSE").name == "MSE"
    assert get_loss("MeanSquaredError").name == "mean_squared_error"
    assert get_loss(keras.losses.MeanSquaredError(name="my_mse")).name == "my_mse"
    assert get_loss(keras.losses.mean_absolute_error).name == "mean_absolute_error"
    assert get_loss(my_abs_loss).name == "my_abs_loss"
    assert get_loss(lambda t, p: t - p).name == "lambda"
    assert get_loss(nn.CrossEntropyLoss()).name == "cross_entropy_loss"
    assert get_loss(nn.BCEWithLogitsLoss()).name == "bce_with_logits_loss"
    assert get_loss(F.mse_loss).name == "mse_loss"
    assert get_loss("ce").name == "ce"


def test_torch_twins_are_used_only_where_kept():
    for identifier in ["mse", "mae", "mape", "msle", "huber", "log_cosh", "hinge", "squared_hinge", "categorical_hinge",
                       "kld", "poisson", "cosine_similarity", "bce",
                       keras.losses.BinaryCrossentropy(from_logits=True)]:  # fmt: skip
        term = get_loss(identifier)
        assert isinstance(term, KerasLossTerm) and term.is_native, identifier
    # Keras's own function runs where it costs little more than a twin (bench/losses.py).
    for identifier in ["categorical_crossentropy", "sparse_categorical_crossentropy",
                       keras.losses.SparseCategoricalCrossentropy(ignore_class=3), "dice"]:  # fmt: skip
        term = get_loss(identifier)
        assert isinstance(term, KerasLossTerm) and not term.is_native, identifier
    assert isinstance(get_loss("crossentropy"), AutoCrossentropy)


# ------------------------------------------------------------------------------- torch losses


def _torch_case(name):
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(B, C, generator=g)
    labels = torch.randint(0, C, (B,), generator=g)
    if name == "ce":
        return nn.CrossEntropyLoss(), labels, logits
    if name == "ce_n1":
        return nn.CrossEntropyLoss(label_smoothing=0.1), labels[:, None], logits
    if name == "ce_weight_ignore":
        labels = labels.clone()
        labels[1] = -100
        return nn.CrossEntropyLoss(weight=torch.rand(C, generator=g) + 0.5), labels, logits
    if name == "ce_temporal":
        return nn.CrossEntropyLoss(), torch.randint(0, C, (B, T), generator=g), torch.randn(B, C, T, generator=g)
    if name == "F.cross_entropy":
        return F.cross_entropy, labels, logits
    if name == "mse":
        return nn.MSELoss(), torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if name == "mse_sum":
        return nn.MSELoss(reduction="sum"), torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if name == "F.l1_loss":
        return F.l1_loss, torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)
    if name == "bce_logits":
        return nn.BCEWithLogitsLoss(), torch.randint(0, 2, (B, 1), generator=g), torch.randn(B, 1, generator=g)
    if name == "kl_batchmean":
        target = torch.softmax(torch.randn(B, C, generator=g), -1)
        return nn.KLDivLoss(reduction="batchmean"), target, torch.log_softmax(logits, -1)
    raise KeyError(name)


@pytest.mark.parametrize(
    "case", ["ce", "ce_n1", "ce_weight_ignore", "ce_temporal", "F.cross_entropy", "mse", "mse_sum", "F.l1_loss",
             "bce_logits", "kl_batchmean"],
)  # fmt: skip
def test_torch_losses_without_weights_equal_torch(case):
    loss, target, output = _torch_case(case)
    term = get_loss(loss)
    assert isinstance(term, TorchLossTerm)
    out = output.clone().requires_grad_(True)
    got = term(target, out)
    t = target.squeeze(-1) if case == "ce_n1" else target
    t = t.float() if case == "bce_logits" else t
    expected = loss(output, t)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    got.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()
    if hasattr(loss, "reduction"):
        assert loss.reduction == ("sum" if case == "mse_sum" else "batchmean" if case == "kl_batchmean" else "mean")


@pytest.mark.parametrize(
    "loss,keras_loss,kind",
    [
        (nn.MSELoss(), keras.losses.MeanSquaredError(), "reg"),
        (nn.CrossEntropyLoss(), keras.losses.SparseCategoricalCrossentropy(from_logits=True), "sparse_logits"),
        (nn.BCEWithLogitsLoss(), keras.losses.BinaryCrossentropy(from_logits=True), "binary_logits"),
        (F.l1_loss, keras.losses.MeanAbsoluteError(), "reg"),
    ],
)
@pytest.mark.parametrize("weights", ["vector", "matrix"])
def test_torch_losses_with_sample_weights_follow_keras_reduction(loss, keras_loss, kind, weights):
    y_true, y_pred = _data(kind, seed=2)
    sw = _weights(weights, y_pred)
    expected = keras_loss(y_true, y_pred, sample_weight=sw)
    torch.testing.assert_close(get_loss(loss)(y_true, y_pred, sw), expected, rtol=RTOL, atol=ATOL)


def test_torch_ce_weighted_uses_torch_divisor_and_sample_weights():
    loss, target, output = _torch_case("ce_weight_ignore")
    sw = torch.arange(1.0, B + 1)
    per = nn.CrossEntropyLoss(weight=loss.weight, reduction="none")(output, target)
    keep = target != -100
    divisor = (loss.weight[target.clamp(min=0)] * keep).sum()
    torch.testing.assert_close(get_loss(loss)(target, output, sw), (per * sw).sum() / divisor)


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad,exc,echo",
    [("nope", ValueError, "'nope'"), ("Loss", ValueError, "'Loss'"), (42, TypeError, "42"), (None, ValueError, "None"),
     ([1, 2], TypeError, "[1, 2]"), (int, TypeError, "int")],
)  # fmt: skip
def test_errors_name_the_argument_and_echo_the_value(bad, exc, echo):
    with pytest.raises(exc) as info:
        get_loss(bad)
    assert "`loss`" in str(info.value) and echo in str(info.value)
    if isinstance(bad, str):
        assert "'mse'" in str(info.value)  # lists what is accepted


# ------------------------------------------------------------------------ loss objects, called as Keras calls them


class SumLoss(keras.losses.Loss):
    """The loss Keras's own layer tests train every layer with: ``__call__`` overridden, ``call`` not written."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        return keras.ops.sum(y_pred)


class LayerModel(keras.Model):
    """A ``Model`` subclass wrapping one layer, as Keras's layer tests build it."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def call(self, x, training=False):
        return self.layer(x, training=training)


LAYERS = {
    "dense": (lambda: keras.layers.Dense(3), (4, 5), (4, 3)),
    "conv2d": (lambda: keras.layers.Conv2D(2, 3), (2, 6, 6, 3), (2, 4, 4, 2)),
    "max_pooling2d": (lambda: keras.layers.MaxPooling2D(2), (2, 4, 4, 3), (2, 2, 2, 3)),
    "lstm": (lambda: keras.layers.LSTM(3), (2, 4, 5), (2, 3)),
    "multi_head_attention": (lambda: _Attention(keras.layers.MultiHeadAttention(2, 4)), (2, 3, 4), (2, 3, 4)),
}


class _Attention(keras.layers.Layer):
    """Self-attention: ``MultiHeadAttention`` called on one input, as a single-input layer."""

    def __init__(self, attention):
        super().__init__()
        self.attention = attention

    def call(self, x, training=False):
        return self.attention(x, x, training=training)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_a_loss_overriding_call_trains_a_layer_as_keras_does(kind):
    import numpy as np

    import keras_bridge as kb

    make_layer, x_shape, y_shape = LAYERS[kind]
    rng = np.random.default_rng(0)
    data = (rng.normal(size=x_shape).astype("float32"), rng.normal(size=y_shape).astype("float32"))

    def endless():
        while True:
            yield data

    models = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        model = LayerModel(make_layer())
        model(data[0])  # built, so that both start from the same weights
        models.append(model)
    k_model, b_model = models
    for k, b in zip(k_model.weights, b_model.weights):
        np.testing.assert_array_equal(k.numpy(), b.numpy())
    k_model.compile(optimizer="sgd", loss=SumLoss())
    k_history = k_model.fit(endless(), steps_per_epoch=1, epochs=2, verbose=0)
    module = kb.KerasModule(b_model)
    module.compile(optimizer="sgd", loss=SumLoss())
    b_history = module.fit(endless(), steps_per_epoch=1, epochs=2, verbose=0)
    assert list(b_history.history) == list(k_history.history) == ["loss"]
    np.testing.assert_allclose(b_history.history["loss"], k_history.history["loss"], rtol=1e-5, atol=1e-6)
    for k, b in zip(k_model.weights, b_model.weights):
        np.testing.assert_allclose(b.numpy(), k.numpy(), rtol=1e-5, atol=1e-6, err_msg=k.path)
