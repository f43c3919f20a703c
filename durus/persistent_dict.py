"""PersistentDict: a dict-like persistent container (API.md section 3).

Owns the mapping behaviour of a persistent dict whose whole contents are one
record: the state is exactly ``{'data': <dict>}``, as Durus 4.3 writes it.

Never lets a mutation slip past ``_p_note_change()``: every mutating method
notes the change before it acts (even if it then raises or changes nothing),
because an unnoted change is silently lost at commit. Never uses
``type(self)`` to find the class (an untracked instance has a tracking twin
class); ``real_class(self)`` is used where the class matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, ClassVar, TypeVar

from durus.persistent import PersistentObject, real_class

__all__ = ["PersistentDict"]

_Self = TypeVar("_Self", bound="PersistentDict")


class PersistentDict(PersistentObject, MutableMapping):  # type: ignore[type-arg]
    """A persistent mapping backed by a plain dict in the ``data`` slot."""

    __slots__ = ["data"]

    data_is: ClassVar[type] = dict
    data: dict[Any, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.data = dict(*args, **kwargs)

    # -- reading (never notes a change) -------------------------------------------

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: Any) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[Any]:
        return iter(self.data)

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.data[key]
        except KeyError:
            pass
        missing = getattr(real_class(self), "__missing__", None)
        if missing is not None:
            return missing(self, key)
        raise KeyError(key)

    def get(self, key: Any, failobj: Any = None) -> Any:
        return self.data.get(key, failobj)

    def has_key(self, key: Any) -> bool:
        return key in self.data

    def keys(self) -> list[Any]:  # type: ignore[override]
        return list(self.data.keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(self.data.values())

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return list(self.data.items())

    def iterkeys(self) -> Iterator[Any]:
        return iter(self.data.keys())

    def itervalues(self) -> Iterator[Any]:
        return iter(self.data.values())

    def iteritems(self) -> Iterator[tuple[Any, Any]]:
        return iter(self.data.items())

    def __eq__(self, other: object) -> bool:
        """Equal only to another PersistentDict with equal data (never to a plain dict)."""
        return isinstance(other, PersistentDict) and self.data == other.data

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def copy(self: _Self) -> _Self:
        """A shallow copy of the same class: UNSAVED, no oid, its own ``data`` dict."""
        klass: Any = real_class(self)
        duplicate = klass.__new__(klass)
        duplicate.__setstate__(self.__getstate__())
        duplicate.data = dict(self.data)
        assert duplicate._p_oid is None and duplicate.data is not self.data
        return duplicate  # type: ignore[no-any-return]

    @classmethod
    def fromkeys(cls: type[_Self], iterable: Iterable[Any], value: Any = None) -> _Self:
        new = cls()
        for key in iterable:
            new[key] = value
        return new

    # -- mutating (always notes the change first) ---------------------------------

    def __setitem__(self, key: Any, value: Any) -> None:
        self._p_note_change()
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        self._p_note_change()
        del self.data[key]

    def clear(self) -> None:
        self._p_note_change()
        self.data.clear()

    def update(self, *others: Any, **kwargs: Any) -> None:
        """Merge at most one mapping (or iterable of pairs), then the keyword items."""
        self._p_note_change()
        if len(others) > 1:
            raise TypeError(f"update expected at most 1 argument, got {len(others)}")
        if others:
            other = others[0]
            if isinstance(other, PersistentDict):
                self.data.update(other.data)
            elif isinstance(other, dict):
                self.data.update(other)
            elif hasattr(other, "keys"):
                for key in other.keys():
                    self[key] = other[key]
            else:
                self.data.update(other)
        if kwargs:
            self.data.update(kwargs)

    def setdefault(self, key: Any, failobj: Any = None) -> Any:
        """The value for ``key``; inserts ``failobj`` (noting a change) only if missing."""
        if key not in self.data:
            self[key] = failobj
        return self.data[key]

    def pop(self, key: Any, *default: Any) -> Any:
        self._p_note_change()
        return self.data.pop(key, *default)

    def popitem(self) -> tuple[Any, Any]:
        self._p_note_change()
        return self.data.popitem()
