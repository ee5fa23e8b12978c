"""TensorBoard: the port writes what Keras's callback writes (same tags, steps, values, folders), without TensorFlow.

Keras's callback cannot run here (it imports ``tensorflow.summary``), so the hook-level tests give it a
stand-in ``summary`` module with TF2's semantics (default writer and step, nested ``record_if``) and
compare what it records with the event files the port writes, read back with ``EventAccumulator``.
"""

import contextlib
import os
import time

import keras
import numpy as np
import pytest
import torch
from helpers import twin_models
from keras import layers
from tensorboard.backend.event_processing import plugin_event_accumulator

import keras_bridge as kb


class FakeWriter:
    def __init__(self, summary, logdir):
        self.summary, self.logdir = summary, logdir

    @contextlib.contextmanager
    def as_default(self, step=None):
        self.summary.writers.append((self, step))
        try:
            yield self
        finally:
            self.summary.writers.pop()

    def flush(self):
        pass

    def close(self):
        pass


class FakeSummary:
    """What Keras's TensorBoard uses of ``tf.summary``, recording (folder, tag, step, value)."""

    def __init__(self):
        self.writers, self.conditions, self.records = [], [], []

    def create_file_writer(self, logdir):
        return FakeWriter(self, logdir)

    @contextlib.contextmanager
    def record_if(self, condition):
        self.conditions.append(condition)
        try:
            yield
        finally:
            self.conditions.pop()

    def _write(self, tag, value, step):
        if not self.writers:
            return False
        if self.conditions and not (self.conditions[-1]() if callable(self.conditions[-1]) else self.conditions[-1]):
            return False
        writer, default_step = self.writers[-1]
        step = default_step if step is None else step
        self.records.append((os.path.basename(writer.logdir), tag, int(step), value))
        return True

    def scalar(self, name, data, step=None):
        return self._write(name, float(data), step)

    def histogram(self, name, data, step=None):
        return self._write(name, None, step)


def read_events(log_dir, values=True):
    records = []
    for folder in ("train", "validation"):
        path = os.path.join(log_dir, folder)
        if not os.path.isdir(path):
            continue
        acc = plugin_event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            for event in acc.Tensors(tag):
                plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
                value = float(event.tensor_proto.float_val[0]) if plugin == "scalars" and values else None
                records.append((folder, tag, int(event.step), value))
    return sorted(records, key=lambda r: (r[0], r[1], r[2]))


def build():
    inp = keras.Input((4,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(inp))


@pytest.fixture(scope="module")
def models():
    k_model, b_model = twin_models(build)
    k_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    module = kb.KerasModule(b_model)
    module.compile(optimizer=kb.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model = module.callback_model
    model.optimizer._last = torch.optim.SGD(b_model.parameters(), lr=0.1)
    return k_model, model


def drive(cb, epochs=3, batches=3, val_batches=2):
    cb.on_train_begin({})
    for epoch in range(epochs):
        cb.on_epoch_begin(epoch, {})
        for batch in range(batches):
            cb.on_train_batch_begin(batch, {})
            time.sleep(0.002)  # steps_per_second divides by the batch's wall time
            cb.on_train_batch_end(batch, {"loss": 1.0 / (batch + 1 + epoch)})
        cb.on_test_begin({})
        for batch in range(val_batches):
            cb.on_test_batch_begin(batch, {})
            cb.on_test_batch_end(batch, {"loss": 0.5})
        cb.on_test_end({"loss": 0.5 + epoch})
        cb.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 0.5 + epoch})
    cb.on_train_end({})


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(update_freq="batch"),
        dict(update_freq=2),
        dict(update_freq=3, histogram_freq=2),
        dict(histogram_freq=1, write_steps_per_second=True),
        dict(update_freq=2, write_steps_per_second=True),
    ],
    ids=str,
)
def test_same_tags_steps_and_values_as_keras(models, tmp_path, kwargs):
    k_model, b_model = models
    keras_cb = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "keras"), write_graph=False, **kwargs)
    keras_cb._summary_module = FakeSummary()
    keras_cb.set_model(k_model)
    drive(keras_cb)
    folders = {"train": "train", "validation": "validation"}
    expected = sorted(
        ((folders[f], tag, step, value) for f, tag, step, value in keras_cb._summary_module.records),
        key=lambda r: (r[0], r[1], r[2]),
    )
    port = kb.callbacks.TensorBoard(log_dir=str(tmp_path / "bridge"), write_graph=False, **kwargs)
    port.set_model(b_model)
    drive(port)
    got = read_events(tmp_path / "bridge")
    timed = lambda r: "steps_per_second" in r[1]  # noqa: E731  (wall-clock values)
    assert [r[:3] for r in got] == [r[:3] for r in expected]
    for g, e in zip(got, expected):
        if e[3] is not None and not timed(e):
            assert g[3] == pytest.approx(e[3], rel=1e-6)
    assert sorted(os.listdir(tmp_path / "bridge")) == ["train", "validation"]


def test_fit_writes_keras_layout_without_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(24, 4)).astype("float32"), rng.integers(0, 3, 24)
    for name, net in (("keras", build()), ("torch", torch.nn.Linear(4, 3))):
        module = kb.KerasModule(net)
        module.compile(
            optimizer="sgd", loss="sparse_categorical_crossentropy" if name == "keras" else "mse", metrics=None
        )
        log_dir = tmp_path / name
        target = y if name == "keras" else np.eye(3, dtype="float32")[y]
        callback = keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=1, update_freq="batch")
        module.fit(x, target, batch_size=8, epochs=2, validation_split=0.25, verbose=0, callbacks=[callback])
        assert callback._global_train_batch == 6  # the user's object holds the port's counters afterwards
        tags = {}
        for folder, tag, step, _ in read_events(log_dir, values=False):
            tags.setdefault((folder, tag), []).append(step)
        weights = ["out/kernel", "out/bias"] if name == "keras" else ["weight", "bias"]
        expected = {
            ("train", "batch_loss"): [1, 2, 3, 4, 5, 6],
            ("train", "epoch_loss"): [0, 1],
            ("train", "epoch_learning_rate"): [0, 1],
            ("validation", "epoch_loss"): [0, 1],
            ("validation", "evaluation_loss_vs_iterations"): [3, 6],
            **{("train", f"{w}/histogram"): [0, 1] for w in weights},
        }
        if name == "keras":
            expected[("train", "keras")] = [0]  # the model config, for Functional/Sequential models
        assert tags == expected


@pytest.mark.parametrize(
    "kwargs, match", [(dict(embeddings_freq=1), "embeddings_freq"), (dict(profile_batch=2), "profile_batch")]
)
def test_untranslatable_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kb.callbacks.TensorBoard(**kwargs)


def test_keras_subclass_is_refused_with_a_hint():
    class Mine(keras.callbacks.TensorBoard):
        pass

    with pytest.raises(ValueError, match="Subclass keras_bridge.callbacks.TensorBoard"):
        kb.callbacks.to_lightning([Mine()])
