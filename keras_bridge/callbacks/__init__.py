"""Keras callbacks on Lightning."""

from keras_bridge.callbacks.adapter import KerasCallbackAdapter

__all__ = ["KerasCallbackAdapter"]
