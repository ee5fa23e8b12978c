"""Keras-style data inputs as Lightning DataLoaders."""

from keras_bridge.data.datasets import to_loader

__all__ = ["to_loader"]
