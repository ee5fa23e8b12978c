"""The callback table: every port declares the port protocol, and every Keras callback it ports is listed once."""

from collections import Counter

import keras
import pytest

import keras_bridge.callbacks as kb_callbacks
from keras_bridge.callbacks.ports.base import Port
from keras_bridge.callbacks.ports.registry import PORTS, RANK_ZERO_ONLY, TABLE, TRANSLATED, port_class


@pytest.mark.parametrize("row", PORTS, ids=lambda row: row.name)
def test_every_port_declares_the_protocol_and_subclasses_its_keras_class(row):
    cls = port_class(row.name)
    assert issubclass(cls, Port)
    assert issubclass(cls, keras.callbacks.Callback)
    if row.keras_class is not None:
        assert issubclass(cls, getattr(keras.callbacks, row.keras_class))
    assert getattr(kb_callbacks, row.name) is cls  # what users import is the registered class


def test_every_ported_keras_callback_is_in_the_table_exactly_once():
    names = Counter(row.name for row in TABLE)
    assert [name for name, count in names.items() if count > 1] == []
    keras_classes = Counter(row.keras_class for row in TABLE if row.keras_class is not None)
    assert [name for name, count in keras_classes.items() if count > 1] == []
    # The Keras callbacks the bridge's public ports subclass: each is the Keras class of one row.
    exported_ports = [getattr(kb_callbacks, name) for name in kb_callbacks.__all__]
    exported_ports = [cls for cls in exported_ports if isinstance(cls, type) and issubclass(cls, Port)]
    assert sorted(cls.__name__ for cls in exported_ports) == sorted(row.name for row in PORTS)
    keras_names = {n for n in dir(keras.callbacks) if isinstance(getattr(keras.callbacks, n), type)}
    ported = {n for n in keras_names if any(c.__bases__[-1] is getattr(keras.callbacks, n) for c in exported_ports)}
    assert ported == {row.keras_class for row in PORTS if row.keras_class is not None}


def test_rank_zero_and_translated_rows_name_keras_classes():
    for name in RANK_ZERO_ONLY:
        assert issubclass(getattr(keras.callbacks, name), keras.callbacks.Callback)
    assert all(row.module is not None and row.keras_class is not None for row in TRANSLATED)
    assert {row.name for row in TRANSLATED} == {"TensorBoard", "BackupAndRestore"}
