"""Lightning's own tools on a ``KerasModule``: each does what Lightning promises, on torch modules and Keras models.

Every expected value is computed here: by a second run that does the same thing another way (a larger batch for
gradient accumulation), by hand from recorded weights (SWA's average), or from the Keras schedule itself.
"""

import logging
import time

import keras
import lightning as L
import numpy as np
import pytest
import torch
from helpers import seeded_mlp
from lightning.pytorch.callbacks import (
    GradientAccumulationScheduler,
    LearningRateMonitor,
    ModelSummary,
    StochasticWeightAveraging,
    Timer,
)
from lightning.pytorch.loggers import Logger
from lightning.pytorch.tuner import Tuner

import keras_bridge as kb

KINDS = ["torch", "keras"]


def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, n)


def _net(kind):
    return seeded_mlp(kind, hidden=4)


def _module(kind, learning_rate=0.1):
    module = kb.KerasModule(_net(kind))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    module.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=loss)
    return module


def _weights(module):
    if module.is_keras:
        return [np.array(v.numpy()) for v in module.model.trainable_variables]
    return [p.detach().numpy().copy() for p in module.model.parameters()]


def _assert_weights_close(actual, expected, atol=1e-6):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=0, atol=atol)


def _plain_trainer(tmp_path, **kwargs):
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(default_root_dir=str(tmp_path), **{**options, **kwargs})


class RecordingLogger(Logger):
    """A Lightning logger keeping what it receives."""

    def __init__(self):
        super().__init__()
        self.metrics = []

    name = "recording"
    version = 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


@pytest.mark.parametrize("kind", KINDS)
def test_model_summary_counts_the_wrapped_model(kind, tmp_path, caplog):
    module = _module(kind)
    x, y = _data()
    trainer = _plain_trainer(tmp_path, max_epochs=1, callbacks=[ModelSummary(max_depth=2)])
    lightning_log = logging.getLogger("lightning.pytorch")  # it does not propagate to the root logger
    lightning_log.addHandler(caplog.handler)
    try:
        trainer.fit(module, datamodule=kb.data.KerasDataModule(x, y, batch_size=16))
    finally:
        lightning_log.removeHandler(caplog.handler)
    summary = L.pytorch.utilities.model_summary.ModelSummary(module, max_depth=2)
    expected = module.model.count_params() if kind == "keras" else 5 * 4 + 4 + 4 * 3 + 3
    assert summary.total_parameters == summary.trainable_parameters == expected == 39
    assert summary.layer_names[0] == "model"
    table = "".join(r.getMessage() for r in caplog.records if r.name.endswith("model_summary"))
    assert "39        Trainable params" in table  # the callback's table, with the wrapped model's parameters


@pytest.mark.parametrize("kind", KINDS)
def test_learning_rate_monitor_reports_the_keras_schedule(kind):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    module = kb.KerasModule(_net(kind))
    module.compile(optimizer=keras.optimizers.SGD(schedule), loss=keras.losses.SparseCategoricalCrossentropy(True))
    logger = RecordingLogger()
    x, y = _data()
    options = {"logger": logger, "log_every_n_steps": 1, "callbacks": [LearningRateMonitor(logging_interval="step")]}
    module.fit(x, y, batch_size=16, epochs=2, verbose=0, trainer=options)
    logged = [(step, value) for step, m in logger.metrics for key, value in m.items() if key.startswith("lr-")]
    assert [step for step, _ in logged] == list(range(8))
    # The rate of each update: Keras's schedule at that step, evaluated by Keras.
    np.testing.assert_allclose([v for _, v in logged], [float(schedule(s)) for s in range(8)], rtol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_timer_stops_the_fit_once_its_duration_has_passed(kind):
    module = _module(kind)
    timer = Timer(duration={"seconds": 1.5}, interval="epoch")
    elapsed = []

    def slow_epoch_end(epoch, logs):
        time.sleep(0.25)
        elapsed.append(timer.time_elapsed("train"))

    x, y = _data()
    history = module.fit(x, y, batch_size=16, epochs=50, verbose=0, trainer={"callbacks": [timer]},
                         callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=slow_epoch_end)])  # fmt: skip
    epochs = len(history.history["loss"])
    assert epochs < 50 and len(elapsed) == epochs
    # Stopped at the first epoch end past the duration (the Timer reads its clock just after this callback).
    assert all(e < 1.5 for e in elapsed[:-1]) and elapsed[-1] >= 1.5 - 0.1
    assert timer.time_elapsed("train") >= 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_accumulation_equals_the_larger_batch(kind):
    x, y = _data()
    accumulated = _module(kind)
    scheduler = GradientAccumulationScheduler({0: 2})
    with pytest.warns(UserWarning, match="accumulate_grad_batches"):  # Lightning's note on optimizer_step hooks
        accumulated.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, trainer={"callbacks": [scheduler]})
    larger = _module(kind)
    larger.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # Two batches of 8 summed over one update is one batch of 16 (Keras's loss is a per-batch mean).
    _assert_weights_close(_weights(accumulated), _weights(larger), atol=1e-6)
    assert not np.allclose(_weights(larger)[0], _weights(_module(kind))[0])  # it did train


@pytest.mark.parametrize("kind", KINDS)
def test_stochastic_weight_averaging_averages_the_epochs_weights(kind):
    module = _module(kind)
    starts = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: starts.append(_weights(module)))
    swa = StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=1)
    x, y = _data()
    module.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[record], trainer={"callbacks": [swa]})
    # Lightning averages the weights at the start of each epoch from swa_start (0-based) to the last.
    window = starts[swa.swa_start : swa.swa_end + 1]
    assert int(swa.n_averaged) == len(window) == 4
    expected = [np.mean([w[i] for w in window], axis=0) for i in range(len(window[0]))]
    _assert_weights_close(_weights(module), expected, atol=1e-6)
    # SWA's learning rate drove the updates (a Keras optimizer's own rate too).
    np.testing.assert_allclose(module.learning_rate, 0.05, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_size_finder_scales_the_datamodule_and_restores_the_module(kind, tmp_path):
    module = _module(kind)
    before = _weights(module)
    x, y = _data()
    data = kb.data.KerasDataModule(x, y, batch_size=4)
    found = Tuner(_plain_trainer(tmp_path, max_epochs=1)).scale_batch_size(
        module, datamodule=data, mode="power", init_val=2, max_trials=3, steps_per_trial=1
    )
    # Each trial doubles from 2 (Lightning 2.2 makes one more trial than 2.6 with max_trials=3).
    assert found == data.batch_size and found in (8, 16)
    assert len(next(iter(data.train_dataloader()))[0]) == found
    _assert_weights_close(_weights(module), before, atol=0)  # the trials' updates were undone
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".*.ckpt"))


def _smoothed(losses, beta=0.98):
    # The bias-corrected running mean with which Lightning's lr finder records the loss (it corrects
    # with the global step after the update: one more than the step index).
    mean, out = 0.0, []
    for i, loss in enumerate(losses):
        mean = beta * mean + (1 - beta) * loss
        out.append(mean / (1 - beta ** (i + 2)))
    return out


def _hand_sgd_losses(kind, x, y, rates):
    # Plain SGD at the given rate per step, on the same initial weights and batches, in torch.
    net = _net(kind)
    params = [v.value for v in net.trainable_variables] if kind == "keras" else list(net.parameters())
    losses = []
    for step, lr in enumerate(rates):
        xb, yb = (torch.as_tensor(a[step * 8 : (step + 1) * 8]) for a in (x, y))
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr * g
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("kind", KINDS)
def test_learning_rate_finder_steps_with_its_rates_and_sets_the_suggestion(kind, tmp_path):
    x, y = _data(256)
    module = _module(kind)
    before = _weights(module)
    data = kb.data.KerasDataModule(x, y, batch_size=8, shuffle=False)
    finder = Tuner(_plain_trainer(tmp_path, max_epochs=1)).lr_find(
        module, datamodule=data, min_lr=1e-3, max_lr=3.0, num_training=24, early_stop_threshold=None
    )
    rates, losses = finder.results["lr"], finder.results["loss"]
    assert len(rates) == 24 and rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(3.0)
    # Each update used the finder's rate: the same losses as plain SGD at those rates, by hand.
    np.testing.assert_allclose(losses, _smoothed(_hand_sgd_losses(kind, x, y, rates)), rtol=1e-4)
    _assert_weights_close(_weights(module), before, atol=0)  # the search's updates were undone
    suggestion = finder.suggestion()
    assert suggestion is not None and module.learning_rate == pytest.approx(suggestion, rel=1e-6)
    if kind == "keras":
        np.testing.assert_allclose(float(module.model.optimizer.learning_rate), suggestion, rtol=1e-6)


def test_learning_rate_finder_is_refused_under_a_keras_schedule(tmp_path):
    module = kb.KerasModule(_net("keras"))
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    module.compile(optimizer=keras.optimizers.SGD(schedule), loss=keras.losses.SparseCategoricalCrossentropy(True))
    x, y = _data()
    with pytest.raises(TypeError, match="a Keras schedule \\(ExponentialDecay\\) drives it"):
        Tuner(_plain_trainer(tmp_path, max_epochs=1)).lr_find(module, datamodule=kb.data.KerasDataModule(x, y))


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_torch_compile_of_the_wrapped_model_runs_the_compiled_graph(kind):
    graphs = []

    def recording_backend(graph_module, example_inputs):
        # A torch.compile backend that records the graphs it gets and runs them as they are.
        graphs.append(graph_module)
        return graph_module.forward

    x, y = _data()
    reference = _module(kind)
    reference_history = reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    net = _net(kind)
    compiled = kb.KerasModule(torch.compile(net, backend=recording_backend), output_names=None)
    compiled.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(True))
    history = compiled.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    assert graphs, "torch.compile's backend never received a graph"
    np.testing.assert_allclose(history["loss"], reference_history["loss"], rtol=1e-5)
