"""KerasDataModule and to_dataloader with a plain lightning.Trainer, on one process and under DDP."""

import keras
import lightning as L
import numpy as np
import pytest
import torch
from _pydatasets import BatchLog, RecordingPyDataset, digits, digits_model, softmax_linear

import keras_bridge as kb


def trainer(**kwargs):
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def compiled(model):
    module = kb.KerasModule(model)
    module.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )
    return module


def test_datamodule_with_plain_trainer_matches_module_fit():
    (x, y), _ = digits(n_train=400)
    keras.utils.set_random_seed(0)
    expected = compiled(digits_model()).fit(
        x, y, batch_size=32, epochs=2, validation_split=0.25, class_weight={5: 2.0}, shuffle=False, verbose=0
    )
    keras.utils.set_random_seed(0)
    module = compiled(digits_model())
    dm = kb.data.KerasDataModule(x, y, batch_size=32, validation_split=0.25, class_weight={5: 2.0}, shuffle=False)
    t = trainer(max_epochs=2)  # use_distributed_sampler keeps Lightning's default (True)
    t.fit(module, datamodule=dm)
    for key, values in expected.history.items():
        np.testing.assert_allclose(float(t.callback_metrics[key]), values[-1], rtol=1e-5, err_msg=key)


def test_to_dataloader_pydataset_with_plain_trainer_runs_hooks_and_shuffles(tmp_path):
    ds = RecordingPyDataset(n_batches=5, batch_size=2, workers=2, use_multiprocessing=True)
    loader = kb.data.to_dataloader(ds, shuffle=True)
    module = kb.KerasModule(softmax_linear())
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    trainer(max_epochs=3, callbacks=[BatchLog(str(tmp_path))]).fit(module, train_dataloaders=loader)
    lines = (tmp_path / "train-rank0.txt").read_text().splitlines()
    orders = [[eval(line.split(" ", 1)[1])[0] for line in lines if line.startswith(f"{e} ")] for e in range(3)]
    assert [sorted(o) for o in orders] == [list(range(5))] * 3
    assert len({tuple(o) for o in orders}) > 1
    assert ds.epoch_ends == 4  # once when the loader is first iterated, then after each epoch


def test_datamodule_refuses_y_with_a_dataset():
    with pytest.raises(ValueError, match="`y` must not be given"):
        kb.data.KerasDataModule(RecordingPyDataset(), y=np.zeros(4)).train_dataloader()


def _kind(kind):
    """10 samples whose first feature is the sample id (ids 2b, 2b+1 in PyDataset batch b)."""
    if kind == "pydataset":
        return RecordingPyDataset(n_batches=5, batch_size=2)
    x = np.repeat(np.arange(10, dtype="float32")[:, None] // 2, 4, axis=1)
    y = np.zeros(10, "int64")
    if kind == "dataloader":
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=2
        )
    return IterBatches([(x[i : i + 2], y[i : i + 2]) for i in range(0, 10, 2)])


class IterBatches:
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


@pytest.mark.ddp
@pytest.mark.parametrize("kind", ["pydataset", "dataloader", "iterable"])
def test_ddp_shards_batches_without_duplicates(tmp_path, kind):
    dm = kb.data.KerasDataModule(_kind(kind), validation_data=_kind(kind), shuffle=True)
    module = kb.KerasModule(softmax_linear())
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["acc"])
    t = trainer(max_epochs=2, devices=2, strategy="ddp_notebook", callbacks=[BatchLog(str(tmp_path))])
    t.fit(module, datamodule=dm)
    for stage in ("train", "val"):
        per_rank = [(tmp_path / f"{stage}-rank{r}.txt").read_text().splitlines() for r in range(2)]
        # 5 batches: dealt out whole (iterable), 3 steps each; split across the processes, 5 steps each
        steps = 6 if kind == "iterable" else 10
        assert len(per_rank[0]) == len(per_rank[1]) == steps
        for epoch in range(2):
            ids = [
                i
                for lines in per_rank
                for line in lines
                if line.startswith(f"{epoch} ")
                for i in eval(line.split(" ", 1)[1])
            ]
            # every row exactly once: nothing duplicated (padding) and nothing lost
            assert sorted(ids) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], (stage, epoch, ids)
    # Exact validation metrics: the DDP value equals one process evaluating the same weights.
    single = module.evaluate(_kind(kind), verbose=0, return_dict=True)
    np.testing.assert_allclose(float(t.callback_metrics["val_loss"]), single["loss"], rtol=1e-5)


@pytest.mark.parametrize("kind", ["arrays", "dataset", "pydataset", "iterable"])
def test_to_dataloader_is_a_torch_dataloader_for_every_input_kind(kind):
    import keras
    import torch

    x = np.arange(20, dtype="float32").reshape(10, 2)
    y = np.arange(10)
    if kind == "arrays":
        data = (x, y)
    elif kind == "dataset":
        data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    elif kind == "iterable":

        class Iterable:  # any re-iterable object yielding (x, y) batches
            def __iter__(self):
                return ((x[i : i + 4], y[i : i + 4]) for i in range(0, 10, 4))

            def __len__(self):
                return 3

        data = Iterable()
    else:

        class Batches(keras.utils.PyDataset):
            def __len__(self):
                return 3

            def __getitem__(self, i):
                return x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]

        data = Batches()
    loader = kb.data.to_dataloader(data, batch_size=4)
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert len(loader) == 3
    targets = [b[1].tolist() for b in loader]
    assert targets == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # and it goes back into fit as Keras data
    module = kb.KerasModule(torch.nn.Linear(2, 1))
    module.compile(optimizer="sgd", loss="mse")
    assert len(module.fit(loader, epochs=2, verbose=0).history["loss"]) == 2
