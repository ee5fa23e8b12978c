"""Keras models that customize ``fit`` the ways Keras's guides show, shared by the keras-step tests and DDP script.

Each model counts the calls of its overridden methods in ``model.calls``.
"""

import keras
import numpy as np
import torch


class Counted:
    """Mixin (Keras turns a Model subclass built from inputs/outputs into a Functional one, so each model
    class derives from ``keras.Model`` itself)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = {"train_step": 0, "test_step": 0, "predict_step": 0}

    def count(self, name):
        self.calls[name] = self.calls[name] + 1

    def update_on(self, data, loss_fn):
        """The guide's update: zero_grad, forward, loss, backward, the optimizer's apply. Returns (y, y_pred, loss)."""
        x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)
        loss = loss_fn(y, y_pred)
        loss.backward()
        trainable_weights = list(self.trainable_weights)
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in trainable_weights], trainable_weights)
        return y, y_pred, loss


class GuideModel(Counted, keras.Model):
    """The guide's first model: its own train_step and test_step over the compiled loss and metrics."""

    def train_step(self, data):
        self.count("train_step")
        y, y_pred, loss = self.update_on(data, lambda y, y_pred: self.compute_loss(y=y, y_pred=y_pred))
        return self.update_metrics(loss, y, y_pred)

    def test_step(self, data):
        self.count("test_step")
        x, y = data
        y_pred = self(x, training=False)
        return self.update_metrics(self.compute_loss(y=y, y_pred=y_pred), y, y_pred)

    def update_metrics(self, loss, y, y_pred):
        """The guide's loop: the loss tracker gets the loss, the other metrics the targets and predictions."""
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


class LowLevelModel(Counted, keras.Model):
    """The guide's low-level model: loss and metrics of its own, a `metrics` property, compile(optimizer=...) only."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = keras.losses.MeanSquaredError()

    def train_step(self, data):
        self.count("train_step")
        y, y_pred, loss = self.update_on(data, self.loss_fn)
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


class OwnCompileModel(Counted, keras.Model):
    """A model whose compile takes `(optimizer, loss_fn, metrics)`."""

    def compile(self, optimizer, loss_fn, metrics):
        super().compile(optimizer=optimizer)
        self.loss_fn = loss_fn
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.extra_metrics = metrics

    @property
    def metrics(self):
        return [self.loss_tracker, *self.extra_metrics] if self.compiled else []

    def train_step(self, data):
        self.count("train_step")
        y, y_pred, loss = self.update_on(data, self.loss_fn)
        return self.track(loss, y, y_pred)

    def test_step(self, data):
        self.count("test_step")
        x, y = data
        y_pred = self(x, training=False)
        return self.track(self.loss_fn(y, y_pred), y, y_pred)

    def track(self, loss, y, y_pred):
        self.loss_tracker.update_state(loss)
        for metric in self.extra_metrics:
            metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        self.count("predict_step")
        x = data[0] if isinstance(data, (tuple, list)) else data
        return self(x, training=False) * 2.0


class GAN(Counted, keras.Model):
    """The guide's GAN: two models, two optimizers, compile(d_optimizer, g_optimizer, loss_fn)."""

    def __init__(self, discriminator, generator, latent_dim):
        super().__init__()
        self.discriminator = discriminator
        self.generator = generator
        self.latent_dim = latent_dim
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.seed_generator = keras.random.SeedGenerator(1337)
        self.built = True

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn

    def train_step(self, real_images):
        self.count("train_step")
        if isinstance(real_images, (tuple, list)):
            real_images = real_images[0]
        batch_size = real_images.shape[0]
        noise = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        generated = self.generator(noise)
        combined = torch.concat([generated, real_images], axis=0)
        labels = torch.concat([torch.ones((batch_size, 1)), torch.zeros((batch_size, 1))], axis=0)
        labels += 0.05 * keras.random.uniform(labels.shape, seed=self.seed_generator)
        self.zero_grad()
        d_loss = self.loss_fn(labels, self.discriminator(combined))
        d_loss.backward()
        grads = [v.value.grad for v in self.discriminator.trainable_weights]
        with torch.no_grad():
            self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
        noise = keras.random.normal(shape=(batch_size, self.latent_dim), seed=self.seed_generator)
        misleading = torch.zeros((batch_size, 1))
        self.zero_grad()
        g_loss = self.loss_fn(misleading, self.discriminator(self.generator(noise)))
        g_loss.backward()
        grads = [v.value.grad for v in self.generator.trainable_weights]
        with torch.no_grad():
            self.g_optimizer.apply(grads, self.generator.trainable_weights)
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}


def dense(cls, in_dim=8, **kwargs):
    inputs = keras.Input(shape=(in_dim,))
    hidden = keras.layers.Dense(4, activation="relu")(inputs)
    return cls(inputs, keras.layers.Dense(1)(hidden), **kwargs)


def make_gan(latent_dim=3, image_dim=6):
    discriminator = keras.Sequential(
        [keras.Input((image_dim,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    generator = keras.Sequential([keras.Input((latent_dim,)), keras.layers.Dense(image_dim, activation="tanh")])
    return GAN(discriminator, generator, latent_dim)


def regression_data(n=96, in_dim=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, in_dim)).astype("float32")
    y = (x @ rng.random((in_dim, 1)) + 0.1).astype("float32")
    return x, y
