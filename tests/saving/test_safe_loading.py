"""Nothing unsafe is loaded: no file the bridge reads can make it unpickle arbitrary objects.

A crafted ``.weights.pt`` / ``.ckpt`` / backup carrying a pickle payload that would create a file is
refused with a clear error and the payload never runs; ``.keras`` files keep Keras's ``safe_mode`` (a
``Lambda`` layer is refused unless the caller opts in), through ``kb.load_model`` and through
``keras.models.load_model``.
"""

import re
from pathlib import Path

import keras
import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import keras_bridge as kb

PACKAGE = Path(kb.__file__).resolve().parent


class Payload:
    """Unpickling this creates ``marker`` (as a malicious file would run any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def module_for(kind="torch"):
    if kind == "torch":
        module = kb.KerasModule(torch.nn.Linear(4, 2))
    else:
        inputs = keras.Input((4,))
        module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    module.compile(optimizer="sgd", loss="mse")
    return module


def weights(module):
    return [p.detach().clone() for p in module.model.parameters()]


@pytest.mark.parametrize("suffix", [".weights.pt", ".ckpt"])
def test_a_pickle_payload_in_a_weights_file_is_refused_and_never_runs(tmp_path, suffix):
    marker = tmp_path / "pwned"
    module = module_for()
    state = {k: v.clone() for k, v in module.model.state_dict().items()}
    content = {"state_dict": {f"model.{k}": v for k, v in state.items()}} if suffix == ".ckpt" else dict(state)
    content["extra"] = Payload(marker)
    path = tmp_path / f"crafted{suffix}"
    torch.save(content, path)
    before = weights(module)
    with pytest.raises(ValueError, match=r"Refused to load .*crafted.*pickled Python objects.*weights_only=True"):
        module.load_weights(str(path))
    assert not marker.exists()
    assert all(torch.equal(a, b) for a, b in zip(before, weights(module)))


def test_lightning_checkpoint_restore_refuses_a_pickle_payload(tmp_path):
    """A plain Lightning Trainer resuming a KerasModule from ``ckpt_path`` reads with ``weights_only=True``."""
    marker = tmp_path / "pwned"
    module = module_for()
    x, y = np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32")
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    loader = kb.data.to_dataloader((x, y), batch_size=4)
    trainer.fit(module, loader)
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    content = torch.load(checkpoint, weights_only=True)
    content["callbacks"]["payload"] = Payload(marker)
    torch.save(content, checkpoint)
    resumed = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        resumed.fit(module_for(), loader, ckpt_path=str(checkpoint))
    assert not marker.exists()


@pytest.mark.parametrize("callback", ["BackupAndRestore", "ResumableCheckpoint"])
@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_a_backup_holding_a_pickle_is_never_unpickled(tmp_path, callback, kind):
    import pickle

    marker = tmp_path / "pwned"
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(pickle.dumps(Payload(marker)))
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    cls = getattr(kb.callbacks, callback) if callback == "ResumableCheckpoint" else keras.callbacks.BackupAndRestore
    module = module_for(kind)
    before = weights(module)
    with pytest.raises(OSError, match="file signature not found"):  # HDF5 only: h5py cannot open a pickle
        module.fit(np.zeros((8, 4), "float32"), np.zeros((8, 2), "float32"), epochs=1, verbose=0,
                   callbacks=[cls(str(backup))])  # fmt: skip
    assert not marker.exists()
    assert all(torch.equal(a, b) for a, b in zip(before, weights(module)))


def lambda_model():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Lambda(lambda t: t * 2.0)(inputs)))


@pytest.mark.parametrize("loader", ["kb.load_model", "keras.models.load_model"])
def test_keras_files_keep_keras_safe_mode(tmp_path, loader):
    module = kb.KerasModule(lambda_model())
    module.compile(optimizer="adam", loss="mse")
    module.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), epochs=1, verbose=0)
    path = str(tmp_path / "lambda.keras")
    module.save(path)
    load = kb.load_model if loader == "kb.load_model" else keras.models.load_model
    with pytest.raises(ValueError, match="safe_mode"):
        load(path)
    restored = load(path, safe_mode=False)
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    np.testing.assert_allclose(restored.predict(x, verbose=0), module.predict(x, verbose=0), rtol=1e-6)


def test_every_torch_load_in_the_package_reads_weights_only():
    calls = []
    for path in PACKAGE.rglob("*.py"):
        for match in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", path.read_text()):
            calls.append((path.name, match.group(0)))
    assert calls, "expected the bridge to read .weights.pt / .ckpt files"
    assert all("weights_only=True" in call for _, call in calls), calls
