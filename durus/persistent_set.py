"""PersistentSet: a set-like persistent container (API.md section 5).

Owns the set behaviour of a persistent set whose whole contents are one
record: the state is exactly ``{'s': <set>}``, as Durus 4.3 writes it.

Never lets a mutation slip past ``_p_note_change()``: every mutating method
notes the change before it acts (even if it then raises), because an unnoted
change is silently lost at commit. Never uses ``type(self)`` to find the class
(an untracked instance has a tracking twin class); methods that build a new
set use ``real_class(self)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from typing import Any, ClassVar, TypeVar

from durus.persistent import PersistentObject, real_class

__all__ = ["PersistentSet"]

_Self = TypeVar("_Self", bound="PersistentSet")

_ORDERING_MESSAGE = "can only compare to a PersistentSet"


def _as_set(other: Any) -> Any:
    """The plain set behind ``other`` if it is a PersistentSet, else ``other`` itself."""
    if isinstance(other, PersistentSet):
        return other.s
    return other


def _as_sets(others: tuple[Any, ...]) -> list[Any]:
    return [_as_set(other) for other in others]


def _require_persistent_set(other: Any) -> set[Any]:
    """The set behind ``other``; TypeError unless it is a PersistentSet."""
    if not isinstance(other, PersistentSet):
        raise TypeError(_ORDERING_MESSAGE)
    return other.s


class PersistentSet(PersistentObject, MutableSet):  # type: ignore[type-arg]
    """A persistent set backed by a plain set in the ``s`` slot."""

    __slots__ = ["s"]

    s_is: ClassVar[type] = set
    s: set[Any]

    def __init__(self, *args: Any) -> None:
        self.s = set(*args)

    def _new_with_set(self: _Self, s: set[Any]) -> _Self:
        """A new instance of this object's class holding ``s`` (a frozenset becomes a set)."""
        if type(s) is not set:
            s = set(s)
        new = real_class(self)()
        new.s = s
        assert isinstance(new, PersistentSet) and new.s is s
        return new  # type: ignore[return-value]

    def __repr__(self) -> str:
        base = PersistentObject.__repr__(self)
        return f"{base[:-1]} {list(self.s)!r}>"

    # -- reading (never notes a change) -------------------------------------------

    def __contains__(self, item: Any) -> bool:
        return item in self.s

    def __len__(self) -> int:
        return len(self.s)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.s)

    def copy(self: _Self) -> _Self:
        return self._new_with_set(set(self.s))

    def issubset(self, other: Iterable[Any]) -> bool:
        return self.s.issubset(_as_set(other))

    def issuperset(self, other: Iterable[Any]) -> bool:
        return self.s.issuperset(_as_set(other))

    def difference(self: _Self, other: Iterable[Any]) -> _Self:
        return self._new_with_set(self.s.difference(_as_set(other)))

    def intersection(self: _Self, *others: Iterable[Any]) -> _Self:
        return self._new_with_set(self.s.intersection(*_as_sets(others)))

    def union(self: _Self, *others: Iterable[Any]) -> _Self:
        return self._new_with_set(self.s.union(*_as_sets(others)))

    def symmetric_difference(self: _Self, *others: Iterable[Any]) -> _Self:
        """Exactly one argument, as for ``set.symmetric_difference`` (TypeError otherwise)."""
        return self._new_with_set(self.s.symmetric_difference(*_as_sets(others)))

    def __and__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(self.s & _as_set(other))

    def __or__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(self.s | _as_set(other))

    def __sub__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(self.s - _as_set(other))

    def __xor__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(self.s ^ _as_set(other))

    def __rand__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(_as_set(other) & self.s)

    def __ror__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(_as_set(other) | self.s)

    def __rsub__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(_as_set(other) - self.s)

    def __rxor__(self: _Self, other: Any) -> _Self:
        return self._new_with_set(_as_set(other) ^ self.s)

    def __eq__(self, other: object) -> bool:
        """Equal only to another PersistentSet with equal contents (never to a plain set)."""
        return isinstance(other, PersistentSet) and self.s == other.s

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __lt__(self, other: Any) -> bool:
        return self.s < _require_persistent_set(other)

    def __le__(self, other: Any) -> bool:
        return self.s <= _require_persistent_set(other)

    def __gt__(self, other: Any) -> bool:
        return self.s > _require_persistent_set(other)

    def __ge__(self, other: Any) -> bool:
        return self.s >= _require_persistent_set(other)

    __hash__ = None  # type: ignore[assignment]

    # -- mutating (always notes the change first) ---------------------------------

    def add(self, item: Any) -> None:
        self._p_note_change()
        self.s.add(item)

    def discard(self, item: Any) -> None:
        self._p_note_change()
        self.s.discard(item)

    def remove(self, item: Any) -> None:
        self._p_note_change()
        self.s.remove(item)

    def pop(self) -> Any:
        self._p_note_change()
        return self.s.pop()

    def clear(self) -> None:
        self._p_note_change()
        self.s.clear()

    def difference_update(self, other: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.difference_update(_as_set(other))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.intersection_update(*_as_sets(others))

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.symmetric_difference_update(_as_set(other))

    def update(self, *others: Iterable[Any]) -> None:
        self._p_note_change()
        self.s.update(*_as_sets(others))

    def __iand__(self: _Self, other: Any) -> _Self:
        self._p_note_change()
        self.s &= _as_set(other)
        return self

    def __ior__(self: _Self, other: Any) -> _Self:
        self._p_note_change()
        self.s |= _as_set(other)
        return self

    def __isub__(self: _Self, other: Any) -> _Self:
        self._p_note_change()
        self.s -= _as_set(other)
        return self

    def __ixor__(self: _Self, other: Any) -> _Self:
        self._p_note_change()
        self.s ^= _as_set(other)
        return self
