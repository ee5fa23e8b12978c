"""Plain torch modules: dict outputs, dict inputs as keyword arguments, predict structures."""

import numpy as np
import torch

import keras_bridge as kb


class DictModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.img = torch.nn.Linear(6, 8)
        self.ts = torch.nn.Linear(3, 8)
        self.score = torch.nn.Linear(16, 1)
        self.cls = torch.nn.Linear(16, 4)
        self.seen_kwargs = None

    def forward(self, img_input, ts_input):
        self.seen_kwargs = ("img_input", "ts_input")
        h = torch.cat([torch.relu(self.img(img_input)), torch.relu(self.ts(ts_input))], dim=-1)
        return {"score_output": self.score(h), "class_output": torch.softmax(self.cls(h), dim=-1)}


def make_data(n=48):
    rng = np.random.default_rng(0)
    x = {"img_input": rng.normal(size=(n, 6)).astype("float32"), "ts_input": rng.normal(size=(n, 3)).astype("float32")}
    y = {"score_output": rng.normal(size=(n, 1)).astype("float32"), "class_output": rng.integers(0, 4, n)}
    return x, y


def manual_epoch_losses(model, x, y, batch_size, lr):
    """The same training by hand: Keras's SGD, sum(w*l)/N per batch, sample-weighted epoch means."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    total, count = 0.0, 0
    xs = {k: torch.from_numpy(v) for k, v in x.items()}
    ys = torch.from_numpy(y["score_output"])
    yc = torch.from_numpy(y["class_output"])
    n = len(ys)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        out = model(**{k: v[sl] for k, v in xs.items()})
        mse = ((out["score_output"] - ys[sl]) ** 2).mean()
        p = out["class_output"]
        p = (p / p.sum(-1, keepdim=True)).clamp(1e-7, 1 - 1e-7)
        ce = -torch.log(p.gather(1, yc[sl].view(-1, 1))).mean()
        loss = 2.0 * mse + ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item() * len(ys[sl])
        count += len(ys[sl])
    return total / count


def test_dict_outputs_dict_inputs_and_predict():
    x, y = make_data()
    module = kb.KerasModule(DictModel())
    reference = DictModel()
    module.compile(
        optimizer="sgd",
        loss={"score_output": "mse", "class_output": "sparse_categorical_crossentropy"},
        loss_weights={"score_output": 2.0},
        metrics={"class_output": ["accuracy"], "score_output": ["mae"]},
    )
    history = module.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert sorted(history.history) == [
        "class_output_accuracy",
        "class_output_loss",
        "loss",
        "score_output_loss",
        "score_output_mae",
    ]
    assert module.model.seen_kwargs == ("img_input", "ts_input")
    expected = manual_epoch_losses(reference, x, y, 16, lr=0.01)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-5)

    pred = module.predict(x, batch_size=10, verbose=0)
    assert isinstance(pred, dict) and sorted(pred) == ["class_output", "score_output"]
    assert pred["score_output"].shape == (48, 1) and pred["class_output"].shape == (48, 4)
    with torch.no_grad():
        direct = module.model(**{k: torch.from_numpy(v) for k, v in x.items()})
    np.testing.assert_allclose(pred["class_output"], direct["class_output"].numpy(), rtol=1e-6)


def test_tuple_outputs_named_and_single_tensor():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 1)
            self.b = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3)).astype("float32")
    module = kb.KerasModule(Two(), output_names=["first", "second"])
    module.compile(optimizer="adam", loss=["mse", "mae"])
    h = module.fit(x, [np.zeros((30, 1), "float32"), np.ones((30, 2), "float32")], epochs=2, verbose=0)
    assert sorted(h.history) == ["first_loss", "loss", "second_loss"]
    np.testing.assert_allclose(
        np.array(h.history["first_loss"]) + np.array(h.history["second_loss"]), h.history["loss"], rtol=1e-5
    )
    preds = module.predict(x, verbose=0)
    assert isinstance(preds, list) and [p.shape for p in preds] == [(30, 1), (30, 2)]
    result = module.evaluate(x, [np.zeros((30, 1), "float32"), np.ones((30, 2), "float32")], verbose=0)
    assert len(result) == 3 and abs(result[0] - (result[1] + result[2])) < 1e-5


def test_torch_loss_and_optimizer_class():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = rng.integers(0, 3, 40)
    torch.manual_seed(0)
    net = torch.nn.Linear(5, 3)
    module = kb.KerasModule(net)
    module.compile(optimizer=torch.optim.Adam, loss=torch.nn.CrossEntropyLoss(), metrics=["accuracy"])
    h = module.fit(x, y, batch_size=40, epochs=1, shuffle=False, verbose=0)
    torch.manual_seed(0)
    ref = torch.nn.Linear(5, 3)
    expected = torch.nn.functional.cross_entropy(ref(torch.from_numpy(x)), torch.from_numpy(y)).item()
    np.testing.assert_allclose(h.history["loss"][0], expected, rtol=1e-5)
    acc = (ref(torch.from_numpy(x)).argmax(-1) == torch.from_numpy(y)).float().mean().item()
    np.testing.assert_allclose(h.history["accuracy"][0], acc, rtol=1e-6)
