"""Script for tests/data/test_keras_rng.py: a shuffled array fit through Keras, or the bridge on 1 or N processes.

Usage: python tests/data/_ddp_keras_shuffle.py OUT_JSON keras|1|2

Writes History, weights and the global random states after fit (each process of a DDP run writes its
own states to ``OUT_JSON.rankR``). The model has no random layer: under DDP those draw per process.
``seed_everything`` was called before (a reseed by Lightning's DDP setup must not move the streams).
"""

import hashlib
import json
import os
import random
import sys

import keras
import numpy as np
import torch


def digest_states():
    """A digest of torch's, NumPy's and Python's global random states."""
    return {
        "torch": hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest(),
        "numpy": hashlib.sha256(np.random.get_state()[1].tobytes()).hexdigest(),
        "python": hashlib.sha256(repr(random.getstate()).encode()).hexdigest(),
    }


def main(out_path: str, mode: str) -> None:
    # An earlier seed_everything (LightningCLI calls it) leaves PL_GLOBAL_SEED in the environment, and
    # Lightning's DDP setup reseeds every process with it: the fit must still draw from the streams below.
    import lightning

    lightning.seed_everything(7, verbose=False)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 6)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int64") + (x[:, 3] > 1).astype("int64")
    keras.utils.set_random_seed(1337)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(16, activation="relu")(inputs)))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    compile_args = dict(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss, metrics=["accuracy"])
    fit_args = dict(batch_size=16, epochs=3, validation_split=0.2, shuffle=True, verbose=0)
    if mode == "keras":
        model.compile(**compile_args)
        history = model.fit(x, y, **fit_args)
    else:
        import keras_bridge as kb

        module = kb.KerasModule(model)
        module.compile(**compile_args)
        trainer = {"accelerator": "cpu", "devices": int(mode)}
        if int(mode) > 1:
            trainer["strategy"] = "ddp"
        history = module.fit(x, y, trainer=trainer, **fit_args)
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    result = {"states": digest_states()}
    if rank == 0:
        result.update(history=history.history, weights=[w.tolist() for w in model.get_weights()])
    with open(out_path if rank == 0 else f"{out_path}.rank{rank}", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
