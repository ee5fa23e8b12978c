"""A user's keras.callbacks.Callback sees what it sees in Keras: hooks, order, logs, params, model."""

import json

import keras
import numpy as np
import pytest
import torch
from helpers import twin_models
from keras import layers

import keras_bridge as kb


class Recorder(keras.callbacks.Callback):
    """Records every hook as (name, index, sorted log keys)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _rec(self, name, index=None, logs=None):
        self.calls.append((name, index, tuple(sorted(logs or {}))))

    def on_train_begin(self, logs=None):
        self._rec("train_begin", None, logs)

    def on_train_end(self, logs=None):
        self._rec("train_end", None, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._rec("epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._rec("epoch_end", epoch, logs)

    def on_batch_begin(self, batch, logs=None):
        self._rec("batch_begin", batch, logs)

    def on_batch_end(self, batch, logs=None):
        self._rec("batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._rec("test_begin", None, logs)

    def on_test_end(self, logs=None):
        self._rec("test_end", None, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._rec("test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._rec("test_batch_end", batch, logs)

    def on_predict_begin(self, logs=None):
        self._rec("predict_begin", None, logs)

    def on_predict_end(self, logs=None):
        self._rec("predict_end", None, logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._rec("predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._rec("predict_batch_end", batch, logs)


def build():
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(layers.Dense(8, activation="relu")(inp)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 5)).astype("float32"), rng.integers(0, 3, 40)


def test_user_callback_hooks_logs_and_params_equal_keras(data):
    x, y = data
    k_model, b_model = twin_models(build)
    compile_kwargs = dict(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    k_model.compile(**compile_kwargs)
    module = kb.KerasModule(b_model)
    module.compile(**compile_kwargs)
    k_rec, b_rec = Recorder(), Recorder()
    fit_kwargs = dict(batch_size=16, epochs=2, validation_split=0.25, shuffle=False, verbose=0)
    k_model.fit(x, y, callbacks=[k_rec], **fit_kwargs)
    module.fit(x, y, callbacks=[b_rec], **fit_kwargs)
    assert b_rec.calls == k_rec.calls
    assert b_rec.params == k_rec.params
    assert b_rec.model is b_model
    k_rec.calls.clear(), b_rec.calls.clear()
    k_model.predict(x, batch_size=16, callbacks=[k_rec], verbose=0)
    module.predict(x, batch_size=16, callbacks=[b_rec], verbose=0)
    assert [c[:2] for c in b_rec.calls] == [c[:2] for c in k_rec.calls]


class Batches(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.losses, self.epoch_logs = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append(dict(logs))


def test_torch_module_facade_and_running_mean_logs(data):
    x, y = data
    torch.manual_seed(0)
    module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1)))
    module.compile(optimizer=kb.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = Batches()
    history = module.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[cb])
    assert len(cb.losses) == 10 and all(isinstance(v, float) for v in cb.losses)
    # batch-end logs are running means: the last one of an epoch is the epoch's loss
    assert cb.losses[4] == pytest.approx(history.history["loss"][0], rel=1e-6)
    model = cb.model
    assert isinstance(model, kb.callbacks.TorchModelFacade)
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    model.optimizer.learning_rate = 0.05
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == 0.05
    weights = model.get_weights()
    model.set_weights([w * 0 for w in weights])
    assert all(float(p.detach().abs().sum()) == 0 for p in module.model.parameters())
    assert getattr(model, "0").out_features == 3  # other attributes come from the wrapped module


def test_lambda_callback_and_stop_at_batch_like_keras(data):
    x, y = data
    seen = []
    k_model, b_model = twin_models(build)
    histories = []
    for model in (k_model, kb.KerasModule(b_model)):
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        cb_model = b_model if isinstance(model, kb.KerasModule) else model

        def stop(batch, logs, m=cb_model):
            seen.append(batch)
            if batch == 1:
                m.stop_training = True

        histories.append(
            model.fit(
                x,
                y,
                batch_size=8,
                epochs=3,
                verbose=0,
                callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=stop)],
            )
        )
    assert histories[1].epoch == histories[0].epoch == [0]
    assert seen == [0, 1, 0, 1]


def test_terminate_on_nan_records_the_partial_epoch(data, capsys):
    x, y = data
    module = kb.KerasModule(torch.nn.Linear(5, 1))
    module.compile(optimizer=kb.optimizers.SGD(1e30), loss="mse")
    history = module.fit(
        x * 1e20,
        y.astype("float32")[:, None],
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    assert history.epoch == [0]
    assert not np.isfinite(history.history["loss"][0])
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_keras_model_optimizer_attribute_is_attached_and_savers_detached(data, tmp_path):
    x, y = data
    model = build()
    module = kb.KerasModule(model)
    module.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    module.fit(x, y, verbose=0, epochs=1)
    # Read as Keras code reads them: the model's optimizer is the Keras optimizer the user compiled with.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)
    assert int(model.optimizer.iterations) == 2
    # save/save_weights are routed through the bridge only during fit
    assert "save" not in model.__dict__
    model.save(tmp_path / "plain.keras")
    assert keras.models.load_model(tmp_path / "plain.keras").count_params() == model.count_params()


def test_remote_monitor_posts_each_epoch(data):
    """Keras's RemoteMonitor posts every epoch's logs to a real HTTP server on loopback."""
    import http.server
    import threading
    import urllib.parse

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append((self.path, urllib.parse.parse_qs(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        x, y = data
        module = kb.KerasModule(torch.nn.Linear(5, 3))
        module.compile(optimizer="sgd", loss="mse")
        history = module.fit(
            x,
            np.eye(3, dtype="float32")[y],
            epochs=2,
            verbose=0,
            callbacks=[keras.callbacks.RemoteMonitor(root=f"http://127.0.0.1:{server.server_port}")],
        )
    finally:
        server.shutdown()
    assert [path for path, _ in received] == ["/publish/epoch/end/"] * 2
    sent = [json.loads(form["data"][0]) for _, form in received]
    assert [d["epoch"] for d in sent] == [0, 1]
    assert [d["loss"] for d in sent] == pytest.approx(history.history["loss"])
