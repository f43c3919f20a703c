"""PersistentList: a list-like persistent container (API.md section 4).

Owns the sequence behaviour of a persistent list whose whole contents are one
record: the state is exactly ``{'data': <list>}``, as Durus 4.3 writes it.

Never lets a mutation slip past ``_p_note_change()``: every mutating method
notes the change before it acts (even if it then raises), because an unnoted
change is silently lost at commit. Never uses ``type(self)`` to find the class
(an untracked instance has a tracking twin class); ``+`` and ``*`` build the
result with ``real_class(self)``.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableSequence
from typing import Any, ClassVar, TypeVar

from durus.persistent import PersistentObject, real_class

__all__ = ["PersistentList"]

_Self = TypeVar("_Self", bound="PersistentList")


def _as_list(other: Any) -> Any:
    """The plain list behind ``other`` if it is a PersistentList, else ``other`` itself."""
    if isinstance(other, PersistentList):
        return other.data
    return other


class PersistentList(PersistentObject, MutableSequence):  # type: ignore[type-arg]
    """A persistent sequence backed by a plain list in the ``data`` slot."""

    __slots__ = ["data"]

    data_is: ClassVar[type] = list
    data: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.data = list(*args, **kwargs)

    def _new_with_data(self: _Self, data: list[Any]) -> _Self:
        """A new instance of this object's class holding ``data``."""
        new = real_class(self)()
        new.data = data
        assert isinstance(new, PersistentList)
        return new  # type: ignore[return-value]

    # -- reading (never notes a change) -------------------------------------------

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, item: Any) -> bool:
        return item in self.data

    def __getitem__(self, index: Any) -> Any:
        """The element at an int index, or a plain list for a slice."""
        return self.data[index]

    def count(self, item: Any) -> int:
        return self.data.count(item)

    def index(self, item: Any, *args: Any) -> int:
        return self.data.index(item, *args)

    def __eq__(self, other: object) -> bool:
        return self is other or self.data == _as_list(other)

    def __ne__(self, other: object) -> bool:
        return self is not other and self.data != _as_list(other)

    def __lt__(self, other: Any) -> bool:
        return bool(self.data < _as_list(other))

    def __le__(self, other: Any) -> bool:
        return bool(self.data <= _as_list(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self.data > _as_list(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self.data >= _as_list(other))

    __hash__ = None  # type: ignore[assignment]

    def __add__(self: _Self, other: Iterable[Any]) -> _Self:
        return self._new_with_data(self.data + list(_as_list(other)))

    def __radd__(self: _Self, other: Iterable[Any]) -> _Self:
        return self._new_with_data(list(_as_list(other)) + self.data)

    def __mul__(self: _Self, n: int) -> _Self:
        return self._new_with_data(self.data * n)

    __rmul__ = __mul__

    # -- mutating (always notes the change first) ---------------------------------

    def __setitem__(self, index: Any, item: Any) -> None:
        self._p_note_change()
        self.data[index] = item

    def __delitem__(self, index: Any) -> None:
        self._p_note_change()
        del self.data[index]

    def append(self, item: Any) -> None:
        self._p_note_change()
        self.data.append(item)

    def insert(self, index: int, item: Any) -> None:
        self._p_note_change()
        self.data.insert(index, item)

    def pop(self, index: int = -1) -> Any:
        self._p_note_change()
        return self.data.pop(index)

    def remove(self, item: Any) -> None:
        self._p_note_change()
        self.data.remove(item)

    def reverse(self) -> None:
        self._p_note_change()
        self.data.reverse()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._p_note_change()
        self.data.sort(*args, **kwargs)

    def extend(self, other: Iterable[Any]) -> None:
        self._p_note_change()
        self.data.extend(_as_list(other))

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def __iadd__(self: _Self, other: Iterable[Any]) -> _Self:
        self._p_note_change()
        self.data.extend(list(_as_list(other)))
        return self

    def __imul__(self: _Self, n: int) -> _Self:
        self._p_note_change()
        self.data *= n
        return self
