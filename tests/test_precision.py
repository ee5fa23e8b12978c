"""Lightning's precision plugins carry through: bf16-mixed runs Keras's losses/metrics in float32."""

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb


def fit(precision, accelerator="cpu"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 8)).astype("float32")
    y = rng.integers(0, 3, 128)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    module = kb.KerasModule(net)
    module.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    trainer = {"precision": precision, "accelerator": accelerator}
    history = module.fit(
        x, y, epochs=2, batch_size=32, shuffle=False, validation_split=0.25, verbose=0, trainer=trainer
    )
    return history, module.predict(x, verbose=0, trainer=trainer)


@pytest.mark.parametrize(
    "accelerator",
    [
        "cpu",
        pytest.param(
            "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
        ),
    ],
)
def test_bf16_mixed_matches_fp32_within_bf16_precision(accelerator):
    reference, ref_pred = fit("32-true")
    history, pred = fit("bf16-mixed", accelerator)
    assert list(history.history) == list(reference.history)
    for key in reference.history:
        # bf16 keeps ~3 significant digits; accuracies may differ by a sample or two
        np.testing.assert_allclose(history.history[key], reference.history[key], rtol=3e-2, atol=2e-2, err_msg=key)
    assert pred.dtype == np.float32 and pred.shape == ref_pred.shape
    np.testing.assert_allclose(pred, ref_pred, rtol=5e-2, atol=5e-2)
