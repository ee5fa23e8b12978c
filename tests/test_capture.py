"""The Keras fast path (compile(jit_compile="auto"), the default): a captured forward pass gives the History of
eager Keras's own fit, to 1e-5, for the models it must keep exact; what it cannot capture runs eagerly."""

import logging

import keras
import numpy as np
import pytest
import torch
from helpers import assert_history_close, load_digits_data, twin_models

import keras_bridge as kb


class AssignInCall(keras.layers.Layer):
    """A user layer that keeps a running mean of its inputs in a variable assigned in ``call``."""

    def build(self, input_shape):
        self.running = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            self.running.assign(0.9 * self.running + 0.1 * keras.ops.mean(x, axis=0))
        return x - self.running


def mlp():
    inputs = keras.Input((64,), name="digits")
    hidden = keras.layers.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-3))(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))


def cnn():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Activation("relu")(h)
    h = keras.layers.Dropout(0.3)(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


def lstm():
    inputs = keras.Input((8,), dtype="int32")
    h = keras.layers.LSTM(8)(keras.layers.Embedding(17, 4)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


def assigning():
    inputs = keras.Input((64,))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(AssignInCall()(inputs)))


def multi_io():
    image = keras.Input((8, 8, 1), name="img_input")
    series = keras.Input((16,), name="ts_input")
    h = keras.layers.concatenate([keras.layers.Flatten()(image), series])
    score = keras.layers.Dense(1, name="score_output")(h)
    label = keras.layers.Dense(10, activation="softmax", name="class_output")(h)
    return keras.Model([image, series], [score, label])


def data(kind):
    x, y = load_digits_data()
    x, y = x[:300], y[:300]
    if kind == "cnn":
        return x.reshape(-1, 8, 8, 1), y
    if kind == "lstm":
        return (x[:, ::8] * 16).astype("int32"), y
    if kind == "multi_io":
        inputs = {"img_input": x.reshape(-1, 8, 8, 1), "ts_input": x[:, :16]}
        return inputs, {"score_output": y.astype("float32")[:, None] / 10.0, "class_output": y}
    return x, y


COMPILE = dict(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
MULTI_COMPILE = dict(
    optimizer="rmsprop",
    loss={"score_output": "mse", "class_output": "sparse_categorical_crossentropy"},
    loss_weights={"score_output": 2.0, "class_output": 1.0},
    metrics={"class_output": ["accuracy"]},
)


@pytest.mark.parametrize(
    "build, kind",
    [(mlp, "mlp"), (cnn, "cnn"), (lstm, "lstm"), (assigning, "mlp"), (multi_io, "multi_io")],
    ids=["mlp", "cnn_batchnorm_dropout", "embedding_lstm", "variable_assigned_in_call", "multi_io"],
)
def test_fast_path_history_equals_eager_keras_fit(build, kind):
    x, y = data(kind)
    compile_args = MULTI_COMPILE if kind == "multi_io" else COMPILE
    keras_model, bridge_model = twin_models(build)
    keras_model.compile(**compile_args)
    keras.utils.set_random_seed(5)
    expected = keras_model.fit(x, y, batch_size=64, epochs=2, shuffle=False, validation_split=0.2, verbose=0)
    module = kb.KerasModule(bridge_model)
    module.compile(**compile_args)
    keras.utils.set_random_seed(5)
    got = module.fit(x, y, batch_size=64, epochs=2, shuffle=False, validation_split=0.2, verbose=0)
    assert module.captured_forward is not None and module.captured_forward.captured >= 2  # train and validation graphs
    assert_history_close(expected, got, rtol=1e-5, atol=1e-6)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the same random stream afterwards: the capture consumed nothing of its own
    keras.utils.set_random_seed(9)
    np.testing.assert_allclose(module.evaluate(x, y, verbose=0), keras_model.evaluate(x, y, verbose=0), rtol=1e-5)


def test_a_seeded_dropout_draws_a_new_mask_every_step_and_runs_eagerly(caplog):
    class MaskLog(keras.callbacks.Callback):
        def __init__(self, probe):
            self.probe, self.masks = probe, []

        def on_train_batch_end(self, batch, logs=None):
            self.masks.append(keras.ops.convert_to_numpy(self.model.layers[1](self.probe, training=True)) == 0)

    inputs = keras.Input((32,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dropout(0.5, seed=11)(inputs)))
    module = kb.KerasModule(model)
    module.compile(optimizer="sgd", loss="mse")
    x = np.ones((64, 32), "float32")
    log = MaskLog(np.ones((1, 32), "float32"))
    with caplog.at_level(logging.INFO, logger="keras_bridge"):
        module.fit(x, np.zeros((64, 1), "float32"), batch_size=8, epochs=1, verbose=0, callbacks=[log])
    assert module.captured_forward.captured == 0
    eager = [r for r in caplog.records if "runs eagerly" in r.getMessage()]
    assert len(eager) == 1  # said once, not per step
    assert eager[0].levelno == logging.INFO and "could not be captured" in eager[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    masks = np.stack(log.masks)
    assert len({m.tobytes() for m in masks}) == len(masks) == 8


def test_jit_compile_false_runs_eagerly_and_bad_values_are_refused():
    module = kb.KerasModule(mlp())
    module.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
    assert module.captured_forward is None
    with pytest.raises(ValueError, match="jit_compile"):
        module.compile(optimizer="adam", loss="mse", jit_compile="fast")


def test_callbacks_see_the_live_weights_during_a_captured_fit():
    x, y = data("mlp")
    seen = []
    module = kb.KerasModule(mlp())
    module.compile(**COMPILE)
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, l: seen.append(module.model.get_weights()[0].copy())
    )
    module.fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[probe])
    assert not np.allclose(seen[0], seen[-1])
    np.testing.assert_array_equal(seen[-1], module.get_weights()[0])
    assert torch.equal(module.model.layers[1].kernel.value.detach(), torch.as_tensor(seen[-1]))


def test_a_module_pickles_after_a_captured_fit_and_trains_on_like_the_original():
    # A launcher (ddp_spawn, ddp_notebook) pickles the module; after a single-device fit it holds captured graphs,
    # which are left behind and captured again where it runs.
    import pickle

    x, y = data("mlp")
    keras.utils.set_random_seed(3)
    module = kb.KerasModule(mlp())
    module.captured_step_min_steps = 0  # a short fit
    # Plain SGD: Keras's own pickling of a model keeps no slot variables of an optimizer (it warns), so a stateful
    # optimizer would start again in the copy, under Keras as here.
    module.compile(**dict(COMPILE, optimizer="sgd"))
    module.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    assert module.captured_forward is not None and module.captured_forward.captured >= 1
    assert module.captured_step is not None and module.captured_step.captured >= 1
    copy = pickle.loads(pickle.dumps(module))
    assert copy.captured_forward.captured == 0 and copy.captured_step.captured == 0
    histories = [m.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0).history for m in (module, copy)]
    assert histories[0] == histories[1]
    assert copy.captured_forward.captured >= 1 and copy.captured_step.captured >= 1
    for a, b in zip(module.model.get_weights(), copy.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_call_signatures_of_batches_tell_every_structure_shape_and_dtype_apart():
    from keras_bridge.capture import call_signature

    x, y, w = torch.ones(4, 3), torch.zeros(4, dtype=torch.long), torch.ones(4)
    batches = [
        (x, y, None), (x, None, y), (x, y, w), (x, y), (x,), [x, y, None], (x[:2], y[:2], None),
        (x.double(), y, None), (x, y.int(), None), ({"a": x}, y, None),
    ]  # fmt: skip
    keys = [call_signature(b, True) for b in batches]
    assert len(set(keys)) == len(batches)
    assert [call_signature(b, True) for b in batches] == keys  # the same batch, the same key
    assert call_signature((x, y, None), False) != keys[0]
    assert call_signature((x.clone(), y.clone(), None), True) == keys[0]


def conv2d_pooled(inputs):
    return keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(4, 3)(inputs))


def conv1d(inputs):
    return keras.layers.Conv1D(4, 3)(inputs)


@pytest.mark.parametrize("head, shape", [(conv2d_pooled, (6, 6, 3)), (conv1d, (9, 3))], ids=["conv2d", "conv1d"])
def test_a_captured_convolution_copies_its_input_once_and_computes_what_keras_does_bit_for_bit(head, shape):
    from keras_bridge.capture import CapturedForward

    inputs = keras.Input(shape)
    model = keras.Model(inputs, head(inputs))
    x = torch.rand(5, *shape)
    forward = CapturedForward(model)
    forward(x, training=True)  # eager
    replayed, _ = forward(x, training=True)  # captured, then replayed
    graph = next(g for g in forward._graphs.values() if callable(g)).__self__
    copies = [n for n in graph.graph.nodes if n.target is torch.ops.aten.clone.default]
    # Keras copies the input to channels-first and (2-D) then to channels-last; the graph copies it once.
    assert [n.args[0].target for n in copies].count(torch.ops.aten.permute.default) == len(copies)
    assert not any(n.args[0].target is torch.ops.aten.clone.default for n in copies)

    weights = [v.value for v in model.trainable_variables]
    replay_grads = torch.autograd.grad(replayed.square().sum(), weights)
    eager = model(x, training=True)
    eager_grads = torch.autograd.grad(eager.square().sum(), weights)
    assert torch.equal(replayed, eager)
    assert all(torch.equal(a, b) for a, b in zip(replay_grads, eager_grads))
