"""Train the Keras guide's MLP on scikit-learn's digits, with Keras-style output, on Lightning.

Run: python examples/train_digits.py
The data ships with scikit-learn (no download). Finishes in well under a minute on 2 CPU cores.
"""

import keras_bridge as kb  # first: it selects keras's torch backend (importing keras first fails without it)

# isort: split
import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits


def get_uncompiled_model() -> keras.Model:
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    module = kb.KerasModule(get_uncompiled_model())
    module.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    history = module.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=10,
        validation_split=0.2,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, verbose=1)],
    )
    print("History keys:", sorted(history.history))
    print("Evaluate on test data")
    loss, acc = module.evaluate(x_test, y_test, batch_size=128)
    print(f"test loss {loss:.4f}, test acc {acc:.4f}")
    predictions = module.predict(x_test[:3])
    print("predictions shape:", predictions.shape, "argmax:", np.argmax(predictions, axis=1).tolist())
    if acc < 0.85:
        raise SystemExit(f"accuracy {acc:.3f} is lower than expected")


if __name__ == "__main__":
    main()
