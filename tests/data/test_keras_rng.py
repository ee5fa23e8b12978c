"""Keras's data order and random streams: the bridge shuffles and draws as ``keras.Model.fit`` on torch does.

Each parity case runs the same script twice under ``keras.utils.set_random_seed``: once through Keras
(torch backend) and once through ``KerasModule``. Models hold an unseeded ``Dropout``, whose masks come
from torch's global generator: equal Histories and weights need every draw of the data pipeline at
Keras's point, not only the same batches. After ``fit``, ``evaluate`` and ``predict`` the torch, NumPy
and Python global random states must be Keras's.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import torch
from helpers import subprocess_env
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import keras_bridge as kb
from keras_bridge.data import keras_rng
from keras_bridge.data.adapters.array import GlobalBatchSampler
from keras_bridge.data.adapters.pydataset import BatchOrder

RTOL = 1e-5
rng = np.random.default_rng(0)
X = rng.normal(size=(100, 8)).astype("float32")
Y = rng.integers(0, 3, size=100).astype("int64")


class Subclassed(keras.Model):
    """Unbuilt until fit: Keras builds it from a peeked batch."""

    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.drop = keras.layers.Dropout(0.3)
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


def functional():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(16, activation="relu")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


class Batches(keras.utils.PyDataset):
    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size

    def __len__(self):
        return -(-len(X) // self.batch_size)

    def __getitem__(self, i):
        rows = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return X[rows], Y[rows]


CASES = {
    "arrays-shuffle-true": lambda: dict(x=X, y=Y, batch_size=16, shuffle=True, validation_split=0.2),
    "arrays-shuffle-batch": lambda: dict(x=X, y=Y, batch_size=16, shuffle="batch", validation_split=0.2),
    # A pass carried over between epochs, which runs out in the third one (Keras's warning).
    "arrays-steps-per-epoch": lambda: dict(x=X, y=Y, batch_size=16, shuffle=True, steps_per_epoch=4),
    "dataloader-unbuilt-subclassed": lambda: dict(
        x=DataLoader(TensorDataset(torch.tensor(X), torch.tensor(Y)), batch_size=16, shuffle=True),
        validation_data=DataLoader(TensorDataset(torch.tensor(X[:40]), torch.tensor(Y[:40])), batch_size=16),
    ),
    "pydataset-shuffled": lambda: dict(x=Batches(16), shuffle=True),
}


def random_states():
    return torch.random.get_rng_state().clone(), np.random.get_state(), random.getstate()


def assert_same_states(bridge, keras_states, when):
    assert torch.equal(bridge[0], keras_states[0]), f"torch's global generator differs after {when}"
    for a, b in zip(bridge[1], keras_states[1]):
        np.testing.assert_array_equal(a, b, err_msg=f"NumPy's global state differs after {when}")
    assert bridge[2] == keras_states[2], f"Python's random state differs after {when}"


def run(case, through_bridge):
    keras.utils.set_random_seed(1337)
    model = Subclassed() if case.startswith("dataloader") else functional()
    target = kb.KerasModule(model) if through_bridge else model
    target.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])  # fmt: skip
    history = target.fit(epochs=3, verbose=0, **CASES[case]())
    after_fit = random_states()
    evaluation = target.evaluate(X, Y, batch_size=32, verbose=0)
    after_evaluate = random_states()
    predictions = target.predict(X, batch_size=32, verbose=0)
    return dict(history=history.history, weights=model.get_weights(), evaluate=evaluation, predict=predictions,
                states={"fit": after_fit, "evaluate": after_evaluate, "predict": random_states()})  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fit_evaluate_predict_draw_as_keras_does(case):
    ours, theirs = run(case, through_bridge=True), run(case, through_bridge=False)
    assert list(ours["history"]) == list(theirs["history"])
    for key, values in theirs["history"].items():
        np.testing.assert_allclose(ours["history"][key], values, rtol=RTOL, err_msg=key)
    for a, b in zip(ours["weights"], theirs["weights"]):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(ours["evaluate"], theirs["evaluate"], rtol=RTOL)
    np.testing.assert_allclose(ours["predict"], theirs["predict"], rtol=RTOL, atol=1e-7)
    for when in ("fit", "evaluate", "predict"):
        assert_same_states(ours["states"][when], theirs["states"][when], when)


class CountingLoader(DataLoader):
    opened = 0

    def __iter__(self):
        type(self).opened += 1
        return super().__iter__()


def test_a_dataloader_into_an_unbuilt_model_is_read_as_keras_reads_it():
    counts = []
    for through_bridge in (False, True):
        keras.utils.set_random_seed(3)
        model = Subclassed()
        target = kb.KerasModule(model) if through_bridge else model
        target.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        CountingLoader.opened = 0
        target.fit(CountingLoader(TensorDataset(torch.tensor(X), torch.tensor(Y)), batch_size=32, shuffle=True),
                   epochs=2, verbose=0)  # fmt: skip
        counts.append(CountingLoader.opened)
    # Keras opens the build peek's iterator, one per epoch, and eagerly one more at every epoch's end
    # that it never reads. The bridge opens the ones read (no other before the peek) and takes the
    # unread ones' base-seed draw without starting an iterator (the parity test shows the same draws).
    assert counts == [5, 3]


@pytest.mark.parametrize("shuffle", [True, "batch"])
def test_a_pass_is_the_order_of_keras_torch_sampler_from_the_same_generator(shuffle):
    torch.manual_seed(11)
    if shuffle is True:
        expected = [list(b) for b in BatchSampler(RandomSampler(range(10)), 3, drop_last=False)]
    else:  # Keras's batch shuffle: torch.randperm on the global generator, batch by batch
        expected = [[b[i] for i in torch.randperm(len(b))] for b in BatchSampler(range(10), 3, drop_last=False)]
    keras_state = torch.random.get_rng_state()
    torch.manual_seed(11)
    assert [t.tolist() for t in GlobalBatchSampler(10, 3, shuffle=shuffle)] == expected
    assert torch.equal(torch.random.get_rng_state(), keras_state)


def test_a_pydataset_pass_is_shuffled_by_python_random_as_keras_does():
    random.seed(5)
    expected = list(range(7))
    random.shuffle(expected)
    state = random.getstate()
    random.seed(5)
    assert list(BatchOrder(shuffle=True, seed=None).epoch(7, world=1)) == expected
    assert random.getstate() == state


def test_the_seeded_shuffle_is_an_opt_in_that_leaves_the_global_generators_alone():
    keras.utils.set_random_seed(2)
    module = kb.KerasModule(torch.nn.Linear(8, 3))
    module.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert module.next_shuffle_seed() is None  # Keras's order by default
    kb.data.set_shuffle_order("seeded")
    try:
        assert isinstance(module.next_shuffle_seed(), int)
        before = random_states()
        module.fit(X, Y, batch_size=16, epochs=2, verbose=0)
        assert_same_states(random_states(), before, "a seeded fit of a torch module")
    finally:
        kb.data.set_shuffle_order("keras")
    with pytest.raises(ValueError, match="order='random'"):
        kb.data.set_shuffle_order("random")


@pytest.mark.parametrize("shuffle", [True, "batch"])
def test_a_restored_sampler_reuses_the_keras_draw_of_its_live_pass(shuffle):
    torch.manual_seed(4)
    sampler = GlobalBatchSampler(11, 2, shuffle=shuffle)
    first = iter(sampler)
    taken = [next(first).tolist() for _ in range(2)]
    state = sampler.state_dict()
    rest = [t.tolist() for t in first]
    restored = GlobalBatchSampler(11, 2, shuffle=shuffle)
    restored.load_state_dict(state)
    torch.manual_seed(99)  # another global state: the live pass is not drawn again
    assert [t.tolist() for t in restored] == rest
    assert sorted(sum(taken + rest, [])) == list(range(11))


def test_pass_draws_take_their_draws_from_the_given_generator():
    generator = torch.Generator().manual_seed(0)
    reference = torch.Generator().manual_seed(0)
    global_state = torch.random.get_rng_state()
    keras_rng.PassDraws(1, 2, generator).start()
    keras_rng.PassDraws(1, 2, generator).end()
    for _ in range(3):
        _ = iter(DataLoader([1], generator=reference))
    assert torch.equal(generator.get_state(), reference.get_state())
    assert torch.equal(torch.random.get_rng_state(), global_state)


def _ddp_run(tmp_path, mode):
    out = tmp_path / f"{mode}.json"
    script = Path(__file__).with_name("_ddp_keras_shuffle.py")
    proc = subprocess.run([sys.executable, str(script), str(out), mode], cwd=tmp_path, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.ddp
def test_ddp_keeps_the_one_process_keras_order(tmp_path):
    keras_run, one, two = (_ddp_run(tmp_path, mode) for mode in ("keras", "1", "2"))
    other_rank = json.loads((tmp_path / "2.json.rank1").read_text())
    for run_ in (one, two):
        assert list(run_["history"]) == list(keras_run["history"])
        for key, values in keras_run["history"].items():
            np.testing.assert_allclose(run_["history"][key], values, rtol=RTOL, atol=1e-6, err_msg=key)
        for a, b in zip(run_["weights"], keras_run["weights"]):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)
    # Every process drew as Keras's one process does: their global generators end where Keras's does.
    for states in (one["states"], two["states"], other_rank["states"]):
        assert states == keras_run["states"]
