"""Lightning's precision plugins carry through: the forward really runs in bf16 / fp16, losses and metrics stay close.

Each test records the dtype the model's layers computed in (a forward hook on torch layers, a probe layer in a
Keras model), so a run that ignored ``precision`` would fail, and compares the History with a float32 run.
"""

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb

GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
LOWER = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class DtypeProbe(keras.layers.Layer):
    """Passes its input through and records the dtype it arrived in."""

    def __init__(self, seen, **kwargs):
        super().__init__(**kwargs)
        self.record = seen.add  # a bound method: Keras would track (copy) the set itself

    def call(self, x):
        self.record(x.dtype)
        return x


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(128, 8)).astype("float32"), rng.integers(0, 3, 128)


def _torch_module(seen):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    net[0].register_forward_hook(lambda layer, args, out: seen.add(out.dtype))
    return kb.KerasModule(net)


def _keras_module(seen, policy):
    keras.utils.set_random_seed(0)
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), DtypeProbe(seen), keras.layers.Dense(3)]
        )
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
    return kb.KerasModule(model)


def fit(kind, precision, accelerator="cpu"):
    seen = set()
    if kind == "keras":
        module = _keras_module(seen, "mixed_bfloat16" if precision == "bf16-mixed" else "float32")
    else:
        module = _torch_module(seen)
    module.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])  # fmt: skip
    x, y = _data()
    trainer = {"precision": precision, "accelerator": accelerator}
    # What ran before the first batch (the bridge's one-off build pass, outside the Trainer) is not recorded.
    forget = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: seen.clear())
    history = module.fit(x, y, epochs=2, batch_size=32, shuffle=False, validation_split=0.25, verbose=0,
                         trainer=trainer, callbacks=[forget])  # fmt: skip
    return history, module.predict(x, verbose=0, trainer=trainer), seen, module


@pytest.mark.parametrize("kind", ["torch", "keras"])
@pytest.mark.parametrize(
    ("precision", "accelerator"),
    [("bf16-mixed", "cpu"), pytest.param("bf16-mixed", "cuda", marks=GPU), pytest.param("16-mixed", "cuda", marks=GPU)],
)
def test_mixed_precision_computes_in_the_lower_dtype_and_matches_fp32(kind, precision, accelerator):
    if kind == "keras" and precision == "16-mixed":
        pytest.skip("Keras's mixed_float16 needs Keras's loss scaling, which Lightning's fp16 scaler replaces")
    reference, ref_pred, ref_seen, _ = fit(kind, "32-true")
    history, pred, seen, module = fit(kind, precision, accelerator)
    assert ref_seen == {torch.float32}
    assert seen == {LOWER[precision]}, f"the forward ran in {seen}, not in {LOWER[precision]}"
    if kind == "keras":  # Keras's mixed policy: float32 variables, bfloat16 compute
        assert {v.dtype for v in module.model.trainable_variables} == {"float32"}
    assert list(history.history) == list(reference.history)
    for key in reference.history:
        # bf16 keeps ~3 significant digits; accuracies may differ by a sample or two
        np.testing.assert_allclose(history.history[key], reference.history[key], rtol=3e-2, atol=2e-2, err_msg=key)
    assert pred.shape == ref_pred.shape
    np.testing.assert_allclose(pred.astype("float32"), ref_pred, rtol=5e-2, atol=5e-2)
