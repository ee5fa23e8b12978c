"""Compile arguments in Keras's serialized form (keras_bridge/configs.py): they train as the objects do."""

import json

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb
from keras_bridge.configs import read_config_file, resolve, to_config


@keras.saving.register_keras_serializable(package="kb_test_configs")
class ScaledMSE(keras.losses.Loss):
    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="kb_test_configs")
def abs_error(y_true, y_pred):
    return keras.ops.mean(keras.ops.abs(y_true - y_pred), axis=-1)


@keras.saving.register_keras_serializable(package="kb_test_configs")
class InverseTime(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, rate=0.1):
        self.rate = rate

    def __call__(self, step):
        return self.rate / (1.0 + keras.ops.cast(step, "float32"))

    def get_config(self):
        return {"rate": self.rate}


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype("float32")
    return x, (x @ rng.normal(size=(4, 2))).astype("float32")


def _model(kind):
    if kind == "keras":
        keras.utils.set_random_seed(3)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    torch.manual_seed(3)
    return torch.nn.Linear(4, 2)


def _objects(schedule):
    return dict(
        optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=0.5),
        loss=ScaledMSE(2.0),
        metrics=["mae", keras.metrics.MeanSquaredError(name="mse_metric"), abs_error],
        weighted_metrics=[keras.metrics.MeanAbsoluteError(name="wmae")],
    )


@pytest.mark.parametrize("kind", ["torch", "keras"])
@pytest.mark.parametrize("schedule", ["exponential", "registered"])
def test_serialize_keras_object_output_trains_as_the_objects_do(kind, schedule):
    def make_schedule():
        if schedule == "registered":
            return InverseTime(0.05)
        return keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)

    x, y = _data()
    by_objects = kb.KerasModule(_model(kind))
    by_objects.compile(**_objects(make_schedule()))
    # What Keras writes, through JSON as a config file would carry it.
    configs = {
        k: json.loads(json.dumps(keras.saving.serialize_keras_object(v))) for k, v in _objects(make_schedule()).items()
    }
    by_configs = kb.KerasModule(_model(kind))
    by_configs.compile(**configs)
    fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0, validation_split=0.25)
    h1, h2 = by_objects.fit(x, y, **fit).history, by_configs.fit(x, y, **fit).history
    assert list(h1) == list(h2) == sorted(h1)
    assert {"loss", "mae", "mse_metric", "abs_error", "wmae", "val_loss"} <= set(h1)
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-6, err_msg=key)
    for a, b in zip(by_objects.get_weights(), by_configs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_short_configs_and_strings_mix_at_any_place_of_a_structure():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 3)).astype("float32")
    targets = {"a": x[:, :1], "b": rng.integers(0, 2, (24, 1)).astype("float32")}

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)

        def forward(self, x):
            return {"a": self.a(x), "b": torch.sigmoid(self.b(x))}

    def run(**compile_args):
        torch.manual_seed(0)
        module = kb.KerasModule(TwoHeads())
        module.compile(**compile_args)
        return module.fit(x, targets, batch_size=8, epochs=2, shuffle=False, verbose=0).history

    by_objects = run(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss={"a": keras.losses.MeanSquaredError(), "b": "binary_crossentropy"},
        loss_weights={"a": 0.5, "b": 2.0},
        metrics={"b": [keras.metrics.BinaryAccuracy(name="acc")]},
    )
    by_configs = run(
        optimizer={"class_name": "Adam", "config": {"learning_rate": 0.01}},
        loss={"a": {"class_name": "MeanSquaredError"}, "b": "binary_crossentropy"},
        loss_weights={"a": 0.5, "b": 2.0},
        metrics={"b": [{"class_name": "BinaryAccuracy", "config": {"name": "acc"}}]},
    )
    assert by_configs == by_objects


_SCHEDULE = {"class_name": "ExponentialDecay", "config": {"decay_rate": 0.5}}
_BAD_CONFIGS = [
    ("optimizer", {"class_name": "Adam", "confg": {}},
     r"unknown key 'confg'\. A Keras config has the keys 'class_name', 'config', 'module', 'registered_name'"),
    ("optimizer", {"class_name": "Adamm"}, r"unknown class_name='Adamm'\. Did you mean 'Adam'\? Accepted: Adadelta, "),
    ("optimizer", {"class_name": "Adam", "config": {"learnin_rate": 0.1}},
     r"Adam got unknown argument\(s\) 'learnin_rate' in 'config'\. Did you mean 'learning_rate'\? Adam takes: amsgrad"),
    ("optimizer", {"class_name": "SGD", "config": {"learning_rate": _SCHEDULE}},
     r"`optimizer\.learning_rate` config: ExponentialDecay.*initial_learning_rate"),
    ("optimizer", {"class_name": "ScaledMSE", "registered_name": "kb_test_configs>ScaledMSE"},
     r"class_name='ScaledMSE' is not a keras\.optimizers\.Optimizer"),
    ("loss", {"class_name": "MeanSquaredError", "config": {"reductio": "sum"}},
     r"MeanSquaredError got unknown argument\(s\) 'reductio'.* takes: dtype, name, reduction"),
    ("loss", [{"class_name": "function", "config": "mean_squared_eror"}],
     r"unknown function 'mean_squared_eror'\. Did you mean 'mean_squared_error'\?"),
    ("metrics", [{"class_name": "Adam"}],
     r"unknown class_name='Adam'\. Accepted: AUC, Accuracy, .*or a class registered"),
    ("metrics", [{"class_name": 3}], r"'class_name' must be a string"),
    ("metrics", [{"class_name": "AUC", "config": [1]}], r"'config' must be a dict of constructor arguments"),
]  # fmt: skip


@pytest.mark.parametrize("argument, value, match", _BAD_CONFIGS)
def test_a_bad_config_names_the_key_and_the_accepted_ones(argument, value, match):
    module = kb.KerasModule(torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match=match):
        module.compile(**{"optimizer": "sgd", "loss": "mse", argument: value})


def test_the_constructor_compiles_and_the_last_compile_is_the_hyperparameters():
    assert not kb.KerasModule(torch.nn.Linear(2, 1)).compiled  # the Keras-style API is unchanged
    module = kb.KerasModule(torch.nn.Linear(2, 1), loss="mse", metrics=[{"class_name": "MeanAbsoluteError"}])
    assert module.compiled and module.hparams["optimizer"] == "rmsprop"  # compile's default optimizer
    assert module.hparams["metrics"][0]["class_name"] == "MeanAbsoluteError"
    module.compile(optimizer=keras.optimizers.Adam(0.01), loss=torch.nn.L1Loss())
    # JSON-able configs only: Keras's form for Keras objects, the bridge's for torch ones.
    hparams = json.loads(json.dumps(dict(module.hparams)))
    assert hparams["optimizer"]["class_name"] == "Adam" and hparams["metrics"][0]["class_name"] == "MeanAbsoluteError"
    rebuilt = kb.KerasModule(torch.nn.Linear(2, 1), **{k: v for k, v in hparams.items()})
    assert isinstance(rebuilt.loss_plan.arguments["loss"], torch.nn.L1Loss)
    assert rebuilt.optimizer_spec.name == "Adam"
    module.compile(optimizer="sgd", loss=lambda y, p: (y - p) ** 2)  # not describable: no compile hyperparameters
    assert "loss" not in module.hparams and module.hparams["jit_compile"] == "auto"


def test_to_config_and_resolve_round_trip():
    values = [
        "mse",
        keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
        keras.losses.mean_absolute_error,
        abs_error,
        torch.nn.CrossEntropyLoss(label_smoothing=0.1),
        {"out": [ScaledMSE(3.0), None]},
    ]
    back = resolve(json.loads(json.dumps(to_config(values))), "loss")
    assert back[0] == "mse" and back[1].get_config()["label_smoothing"] == 0.1 and back[1].get_config()["from_logits"]
    assert back[2] is keras.losses.mean_absolute_error and back[3] is abs_error
    assert back[4].label_smoothing == 0.1 and back[5]["out"][0].scale == 3.0 and back[5]["out"][1] is None
    metrics = resolve(to_config([keras.metrics.AUC(name="auc"), keras.losses.Huber()]), "metrics")
    assert metrics[0].name == "auc" and isinstance(metrics[1], keras.losses.Huber)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_compile_arguments_load_from_a_config_file(tmp_path, suffix):
    arguments = {
        "optimizer": keras.saving.serialize_keras_object(keras.optimizers.RMSprop(0.01)),
        "loss": "mse",
        "metrics": [keras.saving.serialize_keras_object(keras.metrics.MeanAbsoluteError(name="mae"))],
    }
    path = tmp_path / f"compile{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(arguments))
    else:
        import yaml

        path.write_text(yaml.safe_dump(arguments))
    module = kb.KerasModule(torch.nn.Linear(4, 2))
    module.compile(**read_config_file(path))
    x, y = _data()
    assert sorted(module.fit(x, y, epochs=1, verbose=0).history) == ["loss", "mae"]
    with pytest.raises(ValueError, match="ending in '.json', '.yaml' or '.yml'"):
        read_config_file(tmp_path / "compile.txt")
