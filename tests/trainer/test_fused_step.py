"""The fused training step (``keras_bridge.trainer.fused_step``): the same numbers as Lightning's automatic
optimization, chosen or refused before the first batch, and resumable from checkpoints of either kind.

Every expected value comes from a second run: the same fit with the fused step switched off
(``module.allow_fused_step = False``), or Keras's own ``fit`` on the same initial weights.
"""

import keras
import lightning as L
import numpy as np
import pytest
import torch
from helpers import assert_history_close, seeded_mlp, twin_models
from lightning.pytorch.callbacks import Callback, GradientAccumulationScheduler, ModelCheckpoint
from torch.optim.optimizer import register_optimizer_step_post_hook

import keras_bridge as kb


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, n), rng.random(n).astype("float32")


def _keras_dropout_net():
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu", kernel_constraint=keras.constraints.MaxNorm(0.5)),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )


NETS = {
    "torch": lambda: seeded_mlp("torch", hidden=8),
    "keras": lambda: seeded_mlp("keras", hidden=8),
    "keras_dropout_constraint": _keras_dropout_net,
}
OPTIMIZERS = {
    "keras_rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    "keras_adam_schedule": lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 3, 0.5)),
    "string_sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "string_adam": lambda: "adam",
}


class _RecordMode(Callback):
    """Lightning's optimization mode as each training batch sees it, and the global step after it."""

    def __init__(self):
        self.modes, self.steps = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.modes.append(pl_module.automatic_optimization)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(trainer.global_step)


def _weights(module):
    if module.is_keras:
        return [np.array(v.numpy()) for v in module.model.weights]
    return [p.detach().numpy().copy() for p in module.model.parameters()]


def _fit(net, optimizer, fused, callbacks=(), trainer=None, **fit_kwargs):
    module = kb.KerasModule(NETS[net]())
    module.allow_fused_step = fused
    module.compile(
        optimizer=OPTIMIZERS[optimizer](),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        weighted_metrics=["accuracy"],
    )
    x, y, w = _data()
    record = _RecordMode()
    keras.utils.set_random_seed(7)
    history = module.fit(
        x, y, sample_weight=w, batch_size=16, epochs=2, validation_split=0.25, verbose=0,
        callbacks=[record, *callbacks], trainer=trainer, **fit_kwargs,
    )  # fmt: skip
    return module, history, record


@pytest.mark.parametrize(
    "net,optimizer",
    [
        ("torch", "string_sgd_momentum"),
        ("torch", "string_adam"),
        ("keras", "keras_rmsprop"),
        ("keras", "keras_adam_schedule"),
        ("keras_dropout_constraint", "keras_rmsprop"),
        ("keras_dropout_constraint", "string_sgd_momentum"),
    ],
)
def test_fused_step_gives_the_numbers_of_automatic_optimization(net, optimizer):
    fused, fused_history, fused_record = _fit(net, optimizer, fused=True)
    auto, auto_history, auto_record = _fit(net, optimizer, fused=False)

    assert fused.fused_step_refusal is None
    assert auto.fused_step_refusal == "module.allow_fused_step is False"
    assert fused_record.modes == [False] * 10 and auto_record.modes == [True] * 10  # 2 epochs of 5 batches
    assert fused_record.steps == auto_record.steps == list(range(1, 11))
    assert fused_history.history == auto_history.history  # bit for bit
    for a, b in zip(_weights(fused), _weights(auto)):
        np.testing.assert_array_equal(a, b)
    optimizer_state = [o.state_dict() for o in (fused.optimizer_cache.optimizer, auto.optimizer_cache.optimizer)]
    torch.testing.assert_close(optimizer_state[0], optimizer_state[1], rtol=0, atol=0)
    assert fused.automatic_optimization and auto.automatic_optimization  # Lightning's default again after fit


@pytest.mark.parametrize("optimizer", ["keras_rmsprop", "string_sgd_momentum"])
def test_fused_step_matches_keras_fit(optimizer):
    def build():
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])

    k_model, b_model = twin_models(build)
    x, y, w = _data()

    def compile_args():
        return dict(
            optimizer=OPTIMIZERS[optimizer](),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    k_model.compile(**compile_args())
    module = kb.KerasModule(b_model)
    module.compile(**compile_args())
    fit_args = dict(x=x, y=y, sample_weight=w, batch_size=16, epochs=3, validation_split=0.25, shuffle=False)
    keras_history = k_model.fit(verbose=0, **fit_args)
    bridge_history = module.fit(verbose=0, **fit_args)

    assert module.fused_step_refusal is None
    assert_history_close(keras_history, bridge_history, rtol=1e-5)
    for a, b in zip(k_model.get_weights(), b_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert int(module.model.optimizer.iterations.numpy()) == int(k_model.optimizer.iterations.numpy()) == 15


def test_optimizer_step_hooks_still_run():
    calls = []
    handle = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: calls.append(1))
    try:
        module, _, record = _fit("keras", "keras_rmsprop", fused=True)
    finally:
        handle.remove()
    assert module.fused_step_refusal is None and record.modes == [False] * 10
    assert len(calls) == 10


class _OnAfterBackward(Callback):
    def on_after_backward(self, trainer, pl_module):
        pass


class _OnBeforeOptimizerStep(kb.KerasModule):
    def on_before_optimizer_step(self, optimizer):
        pass


REFUSALS = {
    "gradient_clip_val": (dict(trainer={"gradient_clip_val": 0.5}), "gradient_clip_val=0.5"),
    "accumulate_grad_batches": (dict(trainer={"accumulate_grad_batches": 2}), "accumulate_grad_batches=2"),
    "accumulation_scheduler": (
        dict(callbacks=[GradientAccumulationScheduler({1: 2})]),
        "a GradientAccumulationScheduler callback",
    ),
    "callback_hook": (
        dict(callbacks=[_OnAfterBackward()]),
        "the callback _OnAfterBackward implements on_after_backward",
    ),
    "module_hook": (dict(module_class=_OnBeforeOptimizerStep), "overrides on_before_optimizer_step"),
    "checkpoint_within_epochs": (
        dict(callbacks=[ModelCheckpoint(every_n_train_steps=2)], checkpoint=True),
        "the callback ModelCheckpoint saves checkpoints within epochs",
    ),
    "lightning_scheduler": (
        dict(optimizer=kb.optimizers.SGD(learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5))),
        "Lightning steps a learning-rate scheduler",
    ),
    "precision": (dict(trainer={"precision": "64-true"}), "the Trainer's precision plugin is DoublePrecision"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_decided_before_training_and_keep_automatic_optimization(case, tmp_path):
    options, reason = REFUSALS[case]
    module_class = options.get("module_class", kb.KerasModule)
    module = module_class(seeded_mlp("torch", hidden=4))
    module.compile(optimizer=options.get("optimizer", "sgd"), loss=torch.nn.CrossEntropyLoss())
    x, y, _ = _data(32)
    record = _RecordMode()
    trainer = dict(options.get("trainer", {}), default_root_dir=str(tmp_path))
    if options.get("checkpoint"):
        trainer["enable_checkpointing"] = True
    module.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[record, *options.get("callbacks", [])],
               trainer=trainer)  # fmt: skip
    assert reason in module.fused_step_refusal
    assert record.modes == [True] * 8  # every batch, from the first: Lightning's automatic optimization
    # Optimizer steps: 8 batches, by 2 with accumulation (from the second epoch with the scheduler).
    assert record.steps[-1] == {"accumulate_grad_batches": 4, "accumulation_scheduler": 6}.get(case, 8)


def test_a_fit_that_raised_leaves_no_manual_optimization_behind(tmp_path):
    class Boom(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            raise RuntimeError("boom")

    module = kb.KerasModule(seeded_mlp("torch", hidden=4))
    module.compile(optimizer="sgd", loss=torch.nn.CrossEntropyLoss())
    x, y, _ = _data(32)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        module.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Boom()], trainer=trainer)
    # Lightning refuses gradient clipping under manual optimization before any hook runs: the next run is automatic.
    history = module.fit(x, y, batch_size=8, epochs=1, verbose=0, trainer={"gradient_clip_val": 1.0})
    assert module.fused_step_refusal == "gradient_clip_val=1.0"
    assert len(history.history["loss"]) == 1


@pytest.mark.parametrize("first,then", [(True, False), (False, True), (True, True)])
def test_checkpoints_resume_the_same_step_in_either_mode(first, then, tmp_path):
    """A Lightning checkpoint of a fused fit resumes under automatic optimization and the other way round."""

    def module_for(fused):
        module = kb.KerasModule(seeded_mlp("keras", hidden=4))
        module.allow_fused_step = fused
        module.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        return module

    def trainer(epochs, run):
        return L.Trainer(
            max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=str(tmp_path), callbacks=[ModelCheckpoint(dirpath=tmp_path / run, save_last=True)],
        )  # fmt: skip

    x, y, _ = _data(32)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), 8)
    straight = module_for(True)
    straight_trainer = trainer(3, "straight")
    straight_trainer.fit(straight, loader)

    first_module = module_for(first)
    trainer(2, "first").fit(first_module, loader)
    resumed = module_for(then)
    resumed_trainer = trainer(3, "resumed")
    record = _RecordMode()
    resumed_trainer.callbacks.append(record)
    resumed_trainer.fit(resumed, loader, ckpt_path=str(tmp_path / "first" / "last.ckpt"))

    assert record.modes == [not then] * 4 and record.steps == [9, 10, 11, 12]
    assert resumed_trainer.global_step == straight_trainer.global_step == 12
    for a, b in zip(_weights(resumed), _weights(straight)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert int(resumed.model.optimizer.iterations.numpy()) == 12
