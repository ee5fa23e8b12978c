"""Which methods a class redefines: the bridge keeps Keras's or Lightning's path only while they are the base's own.

Example:
    >>> class Base:
    ...     def step(self): ...
    ...     def log(self): ...
    >>> class Mine(Base):
    ...     def step(self): ...
    >>> overridden(Mine(), Base, ("step", "log"))
    ['step']
"""

from __future__ import annotations

from typing import Iterable, List

__all__ = ["overridden"]


def overridden(obj: object, base: type, names: Iterable[str]) -> List[str]:
    """The ``names`` that the class of ``obj`` defines otherwise than ``base`` (in the order given)."""
    return [name for name in names if getattr(type(obj), name, None) is not getattr(base, name, None)]
