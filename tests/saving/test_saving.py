"""Files: atomic writes, .keras / weights / .ckpt formats, and kb.load_model (compile state, safety)."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import torch
from keras import layers

import keras_bridge as kb
from keras_bridge.saving import formats as saving
from keras_bridge.saving.atomic import atomic_write


class Net(torch.nn.Module):
    """A user module whose constructor arguments are stored under the same names."""

    def __init__(self, hidden, dropout=0.0):
        super().__init__()
        self.hidden, self.dropout = hidden, dropout
        self.body = torch.nn.Sequential(torch.nn.Linear(5, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout))
        self.head = torch.nn.Linear(hidden, 3)

    def forward(self, x):
        return torch.softmax(self.head(self.body(x)), -1)


class Opaque(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = torch.nn.Linear(5, width)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 5)).astype("float32"), rng.integers(0, 3, 32)


def trained(net, data, **compile_kwargs):
    module = kb.KerasModule(net)
    kwargs = dict(
        optimizer=kb.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    kwargs.update(compile_kwargs)
    module.compile(**kwargs)
    module.fit(*data, batch_size=8, epochs=2, verbose=0)
    return module


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "m.keras"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(target)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("killed during the save")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.keras"]


def test_a_save_is_invisible_until_complete(tmp_path, data, monkeypatch):
    module = trained(torch.nn.Sequential(torch.nn.Linear(5, 3)), data)
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((os.path.dirname(src) == os.path.dirname(dst), os.path.exists(dst), zipfile.is_zipfile(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    saving.save_model(module, str(tmp_path / "a.keras"))
    assert seen == [(True, False, True)]


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.nn.Sequential(
            torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3), torch.nn.Softmax(-1)
        ),
        lambda: Net(6, dropout=0.25),
    ],
    ids=["sequential", "user_class"],
)
def test_torch_module_round_trip_with_compile_state(tmp_path, data, make):
    torch.manual_seed(0)
    module = trained(make(), data)
    path = str(tmp_path / "m.keras")
    saving.save_model(module, path)
    restored = kb.load_model(path, custom_objects={"Net": Net})
    assert type(restored.model) is type(module.model) and restored.compiled
    assert restored.metric_plan._metrics == ["accuracy"] and restored.optimizer_spec.name == "SGD"
    assert str(restored.model) == str(module.model)  # same constructor arguments (e.g. dropout=0.25)
    for a, b in zip(module.model.state_dict().values(), restored.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert restored.evaluate(*data, verbose=0) == pytest.approx(module.evaluate(*data, verbose=0), rel=1e-6)


def fit_save_resume(make, x, y, path, between):
    """3 epochs unbroken, and 2 epochs, ``between`` (a call with no fit), save, load, 1 more epoch: both modules."""
    unbroken = make()
    unbroken.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    first = make()
    first.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    if between != "nothing":  # their Trainers hold no optimizer: the state saved is the fit's, as in Keras
        getattr(first, between)(x, **({"y": y} if between == "evaluate" else {}), verbose=0)
    saving.save_model(first, path)
    resumed = kb.load_model(path)
    resumed.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return unbroken, resumed


@pytest.mark.parametrize("between", ["nothing", "evaluate", "predict"])
def test_training_continues_from_the_saved_optimizer_state(tmp_path, data, between):
    def make():
        torch.manual_seed(0)
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)))
        module.compile(
            optimizer=kb.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5), momentum=0.9),
            loss="mse",
        )
        return module

    x, y = data[0], np.eye(3, dtype="float32")[data[1]]
    path = str(tmp_path / "m.keras")
    unbroken, resumed = fit_save_resume(make, x, y, path, between)  # momentum and schedule step restored
    for a, b in zip(unbroken.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    recompiled = kb.load_model(path)
    recompiled.compile(optimizer=kb.optimizers.SGD(0.1, momentum=0.9), loss="mse")  # a new optimizer: fresh state
    recompiled.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert not torch.allclose(next(recompiled.model.parameters()), next(resumed.model.parameters()))


@pytest.mark.parametrize("between", ["nothing", "evaluate"])
def test_a_keras_model_continues_from_the_saved_keras_optimizer_state(tmp_path, data, between):
    def make():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), layers.Dense(8, activation="tanh"), layers.Dense(3)])
        module = kb.KerasModule(model)
        module.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        return module

    x, y = data[0], np.eye(3, dtype="float32")[data[1]]
    unbroken, resumed = fit_save_resume(make, x, y, str(tmp_path / "m.keras"), between)  # Adam's moments restored
    for a, b in zip(unbroken.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def test_load_is_safe_by_default(tmp_path, data):
    module = trained(Net(4), data)
    path = str(tmp_path / "m.keras")
    saving.save_model(module, path)
    with pytest.raises(ValueError, match="custom_objects"):
        kb.load_model(path)  # Net is not a torch/keras class: not imported without permission
    assert type(kb.load_model(path, safe_mode=False).model).__name__ == "Net"
    # a crafted file naming an arbitrary function cannot run it
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    config = json.loads(entries["config.json"])
    config["config"] = {"__kb__": "object", "module": "os", "name": "system", "config": {"command": "echo hacked"}}
    entries["config.json"] = json.dumps(config).encode()
    crafted = str(tmp_path / "crafted.keras")
    with zipfile.ZipFile(crafted, "w") as zf:
        for name, content in entries.items():
            zf.writestr(name, content)
    with pytest.raises(ValueError, match="not part of torch"):
        kb.load_model(crafted)
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        kb.load_model(crafted, safe_mode=False)
    with zipfile.ZipFile(path) as zf:
        assert all(not name.endswith((".pkl", ".pt")) for name in zf.namelist())


def test_undescribable_module_warns_and_keeps_its_weights(tmp_path, data):
    module = kb.KerasModule(Opaque(3))
    module.compile(optimizer="sgd", loss="mse")
    path = str(tmp_path / "m.keras")
    with pytest.warns(UserWarning, match="cannot be described"):
        saving.save_model(module, path)
    with pytest.raises(ValueError, match="load_weights"):
        kb.load_model(path)


def test_saving_does_not_consume_training_randomness(tmp_path, data):
    module = trained(Net(4), data)
    torch.manual_seed(1)
    saving.save_model(module, str(tmp_path / "m.keras"))
    after_save = torch.rand(3)
    torch.manual_seed(1)
    torch.testing.assert_close(torch.rand(3), after_save)


@pytest.mark.parametrize("suffix", [".weights.h5", ".weights.pt", ".ckpt"])
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_weights_round_trip(tmp_path, data, suffix, kind):
    def make():
        if kind == "torch":
            return torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(-1))
        inp = keras.Input((5,))
        if suffix == ".ckpt":  # a Lightning checkpoint holds state_dict names, which include layer names
            return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(inp))
        return keras.Model(inp, layers.Dense(3, activation="softmax")(layers.Dropout(0.1)(inp)))

    module = trained(make(), data)
    path = str(tmp_path / f"w{suffix}")
    saving.save_weights(module, path)
    fresh = kb.KerasModule(make())
    saving.load_weights(fresh, path)
    weights = (lambda m: m.get_weights()) if kind == "keras" else (lambda m: list(m.state_dict().values()))
    for a, b in zip(weights(module.model), weights(fresh.model)):
        torch.testing.assert_close(a, b)
    if suffix == ".weights.h5" and kind == "keras":
        other = make()
        other.load_weights(path)  # Keras's own layout
    if suffix == ".ckpt":
        assert {"state_dict", "loops"} <= set(torch.load(path, weights_only=True))


def keras_model():
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(layers.Dense(8, activation="relu")(inp)))


def test_keras_model_file_loads_with_keras_and_with_the_bridge(tmp_path, data):
    module = trained(keras_model(), data, optimizer=keras.optimizers.Adam(1e-2))
    path = str(tmp_path / "m.keras")
    saving.save_model(module, path)
    plain = keras.models.load_model(path)
    np.testing.assert_allclose(plain.predict(data[0], verbose=0), module.predict(data[0], verbose=0), rtol=1e-6)
    restored = kb.load_model(path)
    assert restored.compiled and restored.optimizer_spec.name == "Adam"
    assert restored.evaluate(*data, verbose=0) == pytest.approx(module.evaluate(*data, verbose=0), rel=1e-6)


def test_a_file_written_by_keras_loads_compiled(tmp_path, data):
    model = keras_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*data, epochs=1, verbose=0)
    path = str(tmp_path / "k.keras")
    model.save(path)
    restored = kb.load_model(path)
    assert restored.compiled
    np.testing.assert_allclose(restored.evaluate(*data, verbose=0), model.evaluate(*data, verbose=0), rtol=1e-5)


@pytest.mark.parametrize("path, match", [("m.h5", "end in"), ("m.weights.h5", "end in")])
def test_wrong_extensions_are_clear_errors(tmp_path, data, path, match):
    module = kb.KerasModule(torch.nn.Linear(5, 3))
    module.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=match):
        saving.save_model(module, str(tmp_path / path))
    assert os.listdir(tmp_path) == []
