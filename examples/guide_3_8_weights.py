"""The Keras guide, section 3.8 "Using sample weighting and class weighting", on the bridge.

The guide's code with one change: the model is wrapped in ``kb.KerasModule``. scikit-learn's bundled
digits stand in for MNIST (no download). Class "5" counts twice, three ways: ``class_weight``, a
``sample_weight`` array, and a dataset yielding ``(x, y, sample_weight)`` batches (the guide's
``tf.data`` pipeline becomes a shuffling torch ``DataLoader``). The first two give the same weights
per sample, so with the same seed they give the same History. Writes no files. About 10 seconds on 2
CPU cores.

Run: python examples/guide_3_8_weights.py
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
import keras
import numpy as np
import torch
from keras import layers
from sklearn.datasets import load_digits


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return x[:1500], y[:1500]


def get_uncompiled_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model():
    keras.utils.set_random_seed(0)  # not in the guide: same initial weights and shuffles for each variant
    model = kb.KerasModule(get_uncompiled_model())  # the one change from the guide
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


def main(out_dir=None, epochs=2):
    """Fit with class weights, sample weights and a weighted dataset; returns the Histories and checks. No files."""
    x_train, y_train = load_data()

    class_weight = {
        0: 1.0,
        1: 1.0,
        2: 1.0,
        3: 1.0,
        4: 1.0,
        # Set weight "2" for class "5",
        # making this class 2x more important
        5: 2.0,
        6: 1.0,
        7: 1.0,
        8: 1.0,
        9: 1.0,
    }
    print("Fit with class weight")
    model = get_compiled_model()
    class_history = model.fit(x_train, y_train, class_weight=class_weight, batch_size=64, epochs=epochs, verbose=2)

    sample_weight = np.ones(shape=(len(y_train),))
    sample_weight[y_train == 5] = 2.0
    print("Fit with sample weight")
    model = get_compiled_model()
    sample_history = model.fit(x_train, y_train, sample_weight=sample_weight, batch_size=64, epochs=epochs, verbose=2)
    # Not in the guide: Keras's weighted loss is sum(w * loss) / N, also in evaluate.
    weighted_evaluate = model.evaluate(x_train, y_train, sample_weight=sample_weight, verbose=0)
    predictions = model.predict(x_train, verbose=0)

    # Create a Dataset that includes sample weights (3rd element in the return tuple),
    # shuffle and batch it: the guide's tf.data pipeline as a torch DataLoader.
    train_dataset = torch.utils.data.TensorDataset(
        torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(sample_weight)
    )
    train_dataset = torch.utils.data.DataLoader(train_dataset, batch_size=64, shuffle=True)
    print("Fit on a dataset of (x, y, sample_weight)")
    model = get_compiled_model()
    dataset_history = model.fit(train_dataset, epochs=epochs, verbose=2)

    return {
        "class_weight": class_history.history,
        "sample_weight": sample_history.history,
        "dataset": dataset_history.history,
        "weighted_evaluate": weighted_evaluate,
        "predictions": predictions,
        "y": y_train,
        "sample_weights": sample_weight,
    }


if __name__ == "__main__":
    main()
