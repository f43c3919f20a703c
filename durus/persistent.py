"""Persistent objects: states, ghosts, change notes and the read fast path.

Owns the base classes applications subclass (``PersistentBase``,
``PersistentObject``, ``Persistent``, ``ComputedAttribute``), the
``ConnectionBase`` slot layout, and the rules of API.md section 2: which
attribute reads load a ghost or count as an access, which writes note a change.

Never imports a storage, the connection or the serializer: an object talks to
its connection only through ``load_state``, ``note_access``, ``note_change``
and ``transaction_serial``. That keeps this module testable with a fake
connection and keeps the import graph one-way.

The read fast path ("tracking twins")
-------------------------------------
A read of an already loaded object must cost what a read of a plain Python
object costs, yet every object read in a transaction must be known to the
connection (conflict detection at commit). Overriding ``__getattribute__`` on
the application's class would put a Python call on every read and stop
CPython from specializing ``LOAD_ATTR``. Instead:

* the application's class ``C`` has no ``__getattribute__`` override;
* each persistent class gets, lazily, a generated subclass ``T`` (its
  "tracking twin": ``__slots__ = ()``, same name, qualname and module) whose
  ``__getattribute__`` switches the instance's ``__class__`` to ``C``, loads a
  ghost, notes the access and then does the plain lookup. Noting is
  ``connection.note_access(obj)``, or, when the connection exposes an
  ``access_log`` list (its ``note_access`` is the stock one), the same work
  inline: set ``_p_serial`` and append to the list. Later reads in the same
  transaction run at plain speed;
* ghosts and connected objects not yet read in the current transaction are
  instances of ``T``. The connection switches the objects it saw accessed back
  to ``T`` at every transaction boundary (one C-level pass over the objects
  touched), and ghosting always switches to ``T``;
* objects the application creates are plain instances of ``C`` until they are
  stored.

Invariants: a GHOST is always an instance of its twin; an instance of a real
class with a connection was accessed in the connection's current transaction.
``type(obj)`` of an untracked object is the twin, so code that needs the
application's class uses ``real_class(obj)``; ``obj.__class__``, ``repr``,
pickling and copying all see the real class.

Writes go through ``PersistentBase.__setattr__``/``__delattr__``: a change is
noted only when the status is not UNSAVED (the semantics of Durus's C
extension, API.md section 21).

Measured (bench/warm_reads.py, CPython 3.11, 10,000 loaded objects; see
bench/README.md): warm reads run at about 0.8x the speed of reads of plain
objects (Durus 4.3 with its C extension: about 0.4x, its ``tp_getattro``
override blocks the specialized lookup). The remaining gap is CPython's:
assigning ``__class__`` materializes the instance ``__dict__``, and a lookup
in a materialized dict is slower than in inline values (a plain object with a
materialized dict reads at about 0.85x of an untouched one). Two details keep
it small:
``Persistent.__setstate__`` interns str keys (the specialized lookup compares
keys by identity, and unpickled keys are fresh strings), and fills a combined
dict rather than the split dict a bare ``__dict__`` access would create. The
first read of an object in a transaction, with the boundary that follows it,
costs less than Durus 4.3 pays (one Python-level hook call).
"""

from __future__ import annotations

import copyreg
import sys
from collections.abc import Callable, Iterator
from sys import intern as _intern
from typing import Any, SupportsIndex, TypeVar

from durus.utils import IS_PYPY, as_bytes, iteritems, str_to_int8

__all__ = [
    "UNSAVED",
    "SAVED",
    "GHOST",
    "PersistentBase",
    "ConnectionBase",
    "PersistentObject",
    "Persistent",
    "ComputedAttribute",
    "call_if_persistent",
    "_getattribute",
    "_setattribute",
    "_delattribute",
    "_hasattribute",
    "real_class",
    "tracking_class",
    "untrack",
    "new_ghost",
    "is_tracking_class",
]

UNSAVED = 1
SAVED = 0
GHOST = -1

stderr = sys.stderr
_T = TypeVar("_T")

# Names whose lookup never loads a ghost nor counts as an access.
_EXEMPT_NAMES = frozenset(("__class__", "__repr__", "__setstate__"))
_NON_DATA_SLOTS = frozenset(("__weakref__", "__dict__"))

_getattribute = object.__getattribute__
_setattribute = object.__setattr__
_delattribute = object.__delattr__
_set_class = object.__dict__["__class__"].__set__


def _hasattribute(obj: object, name: str) -> bool:
    """True if ``_getattribute(obj, name)`` would succeed; never loads a ghost.

    Only AttributeError means False; any other error propagates, so a broken
    descriptor is not mistaken for a missing attribute.
    """
    try:
        _getattribute(obj, name)
    except AttributeError:
        return False
    return True


def call_if_persistent(f: Callable[[Any], _T], x: object) -> _T | None:
    """``f(x)`` if ``x`` is a persistent instance, else None."""
    if isinstance(x, PersistentBase):
        return f(x)
    return None


class ConnectionBase:
    """The slot layout a persistent object's ``_p_connection`` must have."""

    __slots__ = ("transaction_serial",)
    transaction_serial: int
    # A connection whose ``note_access`` does no more than set ``_p_serial`` to
    # ``transaction_serial`` and append the object to a list may expose that
    # list here; the read hook then does both inline (no Python call per first
    # read). None (the default) means: always call ``note_access``.
    access_log: list[Any] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ConnectionBase:
        connection = object.__new__(cls)
        connection.transaction_serial = 1
        return connection

    def note_access(self, obj: PersistentBase) -> None:
        """Record that ``obj`` was read in the current transaction."""
        raise NotImplementedError

    def note_change(self, obj: PersistentBase) -> None:
        """Record that ``obj`` must be written at the next commit."""
        raise NotImplementedError

    def load_state(self, obj: PersistentBase) -> None:
        """Load the stored state into the ghost ``obj``."""
        raise NotImplementedError


class PersistentBase:
    """The minimal persistent type: four ``_p_`` slots, no ``__dict__``, no weakrefs."""

    __slots__ = ("_p_status", "_p_serial", "_p_connection", "_p_oid")
    # The slots' types, for type checkers (bare annotations make no class attribute).
    _p_status: int
    _p_serial: int
    _p_connection: ConnectionBase | None
    _p_oid: bytes | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        obj = object.__new__(cls)
        _status_set(obj, UNSAVED)
        _serial_set(obj, 0)
        _connection_set(obj, None)
        _oid_set(obj, None)
        return obj

    def __setattr__(self, name: str, value: Any) -> None:
        if name[:3] == "_p_":
            _check_p_value(name, value)
            _setattribute(self, name, value)
            if name in _TRACKING_NAMES:
                _retrack_after_p_write(self)
            return
        if _status_get(self) != UNSAVED:
            self._p_note_change()  # type: ignore[attr-defined]
        _setattribute(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name[:3] != "_p_" and _status_get(self) != UNSAVED:
            self._p_note_change()  # type: ignore[attr-defined]
        _delattribute(self, name)

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        """Pickle by class and ``__getstate__``; old protocols too go through ``__new__``."""
        # Any: mypy takes ``klass.__reduce__`` for a method bound to the class
        # object, not the function the class defines, and so reports the
        # identity test below as always true.
        klass: Any = real_class(self)
        if int(protocol) >= 2 or klass.__reduce__ is not object.__reduce__:
            return object.__reduce_ex__(self, protocol)
        return copyreg.__newobj__, (klass,), self.__getstate__()  # type: ignore[attr-defined]


# The slot descriptors' bound methods: calling these skips the instance's class
# (and so a twin's read hook). The annotations give mypy the slot types (the
# class ``__dict__`` holds the very descriptors); they cost nothing at run time.
_slot_descriptors = PersistentBase.__dict__
_status_get: Callable[[object], int] = _slot_descriptors["_p_status"].__get__
_status_set: Callable[[object, int], None] = _slot_descriptors["_p_status"].__set__
_serial_get: Callable[[object], int] = _slot_descriptors["_p_serial"].__get__
_serial_set: Callable[[object, int], None] = _slot_descriptors["_p_serial"].__set__
_connection_get: Callable[[object], ConnectionBase | None] = _slot_descriptors[
    "_p_connection"
].__get__
_connection_set: Callable[[object, ConnectionBase | None], None] = _slot_descriptors[
    "_p_connection"
].__set__
# Any: the oid is None before the first commit and bytes after; durus.connection
# calls this on stored objects only, which the type cannot say.
_oid_get: Callable[[object], Any] = _slot_descriptors["_p_oid"].__get__
_oid_set: Callable[[object, bytes | None], None] = _slot_descriptors["_p_oid"].__set__
del _slot_descriptors


_TRACKING_NAMES = frozenset(("_p_status", "_p_serial", "_p_connection"))


def _retrack_after_p_write(obj: Any) -> None:
    """After code outside the connection set a tracking slot: let the next read be
    tracked again when it must be (a ghost, or an object with a connection)."""
    if _status_get(obj) == GHOST or _connection_get(obj) is not None:
        untrack(obj)


def _check_p_value(name: str, value: Any) -> None:
    """Reject ``_p_`` values that would break the persistence machinery."""
    if name == "_p_status":
        if type(value) is not int or value not in (UNSAVED, SAVED, GHOST):
            raise TypeError(f"_p_status must be UNSAVED, SAVED or GHOST, not {value!r}")
    elif name == "_p_connection":
        if value is not None and not isinstance(value, ConnectionBase):
            raise TypeError(f"_p_connection must be a ConnectionBase or None, not {value!r}")


# ---------------------------------------------------------------------------
# Tracking twins


class _TwinTable(dict[type, type]):
    """class -> its twin; a missing key (a twin itself, or a class whose twin is not
    made yet) is answered by ``tracking_class``, so bulk lookups need no Python loop."""

    def __missing__(self, klass: type) -> type:
        return tracking_class(klass)


_twin_by_class: dict[type, type] = _TwinTable()
_real_by_twin: dict[type, type] = {}


def real_class(obj: object) -> type:
    """The application class of ``obj`` (``type(obj)`` unless it is a tracking twin)."""
    klass = type(obj)
    return _real_by_twin.get(klass, klass)


def is_tracking_class(klass: type) -> bool:
    """True if ``klass`` is a generated tracking twin."""
    return klass in _real_by_twin


def tracking_class(klass: type) -> type:
    """The tracking twin of the persistent class ``klass``, created on first use.

    The twin is made by calling ``klass``'s metaclass, so ``__init_subclass__``
    and metaclass hooks of ``klass`` see it like any subclass (a registry of
    subclasses should skip classes for which ``is_tracking_class`` is true).
    """
    twin = _twin_by_class.get(klass)
    if twin is not None:
        return twin
    if klass in _real_by_twin:
        return klass
    if not (isinstance(klass, type) and issubclass(klass, PersistentBase)):
        raise TypeError(f"{klass!r} is not a persistent class")
    twin = _make_twin(klass)
    _twin_by_class[klass] = twin
    _real_by_twin[twin] = klass
    assert twin.__basicsize__ == klass.__basicsize__
    return twin


def _make_twin(klass: type) -> type:
    """A subclass of ``klass`` with the same layout whose reads are tracked."""
    namespace = {
        "__slots__": (),
        "__getattribute__": _tracking_hook(klass),
        "__module__": klass.__module__,
        "__qualname__": klass.__qualname__,
        "__doc__": klass.__doc__,
    }
    metaclass: Any = type(klass)
    twin: type = metaclass(klass.__name__, (klass,), namespace)
    return twin


def _tracking_hook(klass: type) -> Callable[[Any, str], Any]:
    """The twin's ``__getattribute__``: load a ghost, note the access, become ``klass``.

    When ``klass`` has the plain lookup (no ``__getattribute__``/``__getattr__``
    of its own) the hook switches the class first and then reads the ``_p_``
    slots with ordinary attribute reads, which CPython runs faster than calls
    of the slot descriptors; if loading or noting fails, the object becomes a
    twin instance again, as before the read.
    """
    plain_getattribute: Any = klass.__getattribute__
    if plain_getattribute is not object.__getattribute__ or hasattr(klass, "__getattr__"):
        return _general_tracking_hook(klass)

    def __getattribute__(self: Any, name: str) -> Any:
        if name[:3] == "_p_" or name in _EXEMPT_NAMES:
            if name == "__class__":
                return klass
            return plain_getattribute(self, name)
        _set_class(self, klass)  # from here on, reads of self are plain reads
        try:
            if self._p_status == GHOST:
                self._p_load_state()
                _set_class(self, klass)  # a ``_p_`` write while loading makes self a twin
            connection = self._p_connection
            if connection is not None:
                access_log = connection.access_log
                if access_log is None:
                    connection.note_access(self)
                    _set_class(self, klass)  # as above, e.g. ``obj._p_serial = serial``
                else:  # what note_access does, without the call
                    _serial_set(self, connection.transaction_serial)
                    access_log.append(self)
        except BaseException:
            _set_class(self, _twin_by_class[klass])
            raise
        return getattr(self, name)

    return __getattribute__


def _general_tracking_hook(klass: type) -> Callable[[Any, str], Any]:
    """The hook for a class with its own ``__getattribute__`` or ``__getattr__``:
    it reads the ``_p_`` slots through their descriptors, switches last, and
    finishes with the class's own lookup (getattr() would run a ``__getattr__``
    fallback twice on a miss)."""
    plain_getattribute: Any = klass.__getattribute__

    def __getattribute__(self: Any, name: str) -> Any:
        if name[:3] == "_p_" or name in _EXEMPT_NAMES:
            if name == "__class__":
                return klass
            return plain_getattribute(self, name)
        if _status_get(self) == GHOST:
            real: Any = klass
            real._p_load_state(self)  # through the class: no second pass through this hook
        connection = _connection_get(self)
        if connection is not None:
            connection.note_access(self)
        _set_class(self, klass)
        return plain_getattribute(self, name)

    return __getattribute__


def untrack(obj: PersistentBase) -> None:
    """Make ``obj`` an instance of its twin again: its next read counts as an access."""
    klass = type(obj)
    if klass not in _real_by_twin:
        _set_class(obj, tracking_class(klass))
    assert type(obj) in _real_by_twin


def new_ghost(klass: type, oid: bytes | None, connection: ConnectionBase | None) -> Any:
    """A new GHOST of ``klass`` (an instance of its twin) owned by ``connection``."""
    construct: Any = klass.__new__
    ghost = construct(tracking_class(klass))
    _oid_set(ghost, oid)
    _connection_set(ghost, connection)
    _status_set(ghost, GHOST)
    assert real_class(ghost) is klass
    return ghost


# ---------------------------------------------------------------------------
# Data slots (per class, computed once)

_data_slots_by_class: dict[type, tuple[tuple[str, Any], ...]] = {}


def _slot_names(klass: type) -> tuple[str, ...]:
    """The attribute names of the data slots ``klass`` itself declares (mangled)."""
    declared = klass.__dict__.get("__slots__", ())
    if isinstance(declared, str):
        declared = (declared,)
    names = []
    for name in declared:
        if name in _NON_DATA_SLOTS:
            continue
        if name.startswith("__") and not name.endswith("__"):
            name = "_" + klass.__name__.lstrip("_") + name
        names.append(name)
    return tuple(names)


def _data_slots(klass: type) -> tuple[tuple[str, Any], ...]:
    """``(name, descriptor)`` of every data slot of ``klass``, most derived class first."""
    slots = _data_slots_by_class.get(klass)
    if slots is None:
        found = []
        for base in klass.__mro__:
            if base is PersistentBase or base is object:
                continue
            for name in _slot_names(base):
                found.append((name, base.__dict__[name]))
        slots = tuple(found)
        assert len({name for name, _ in slots}) == len(slots), f"duplicate slots in {klass}"
        _data_slots_by_class[klass] = slots
    return slots


def _has_dict(klass: type) -> bool:
    return klass.__dictoffset__ != 0


# ---------------------------------------------------------------------------
# The application classes


class PersistentObject(PersistentBase):
    """The class applications subclass: persistent, weak-referenceable, no ``__dict__``."""

    __slots__ = ("__weakref__",)

    def __getstate__(self) -> Any:
        if _status_get(self) == GHOST:
            self._p_load_state()
        klass = real_class(self)
        state = dict(_getattribute(self, "__dict__")) if _has_dict(klass) else {}
        for name, descriptor in _data_slots(klass):
            try:
                state[name] = descriptor.__get__(self)
            except AttributeError:
                continue
        return state

    def __setstate__(self, state: Any) -> None:
        klass = real_class(self)
        if _has_dict(klass):
            _getattribute(self, "__dict__").clear()
        for _name, descriptor in _data_slots(klass):
            try:
                descriptor.__delete__(self)
            except AttributeError:
                continue
        if state is not None:
            for name, value in iteritems(state):
                _setattribute(self, name, value)

    def __repr__(self) -> str:
        oid = _oid_get(self)
        name = real_class(self).__name__
        if oid is None:
            return f"<{name} @{id(self):x}>"
        return f"<{name} {self._p_format_oid()}>"

    def _p_load_state(self) -> None:
        if _status_get(self) != GHOST:
            raise AssertionError(f"_p_load_state() on {self!r}, which is not a ghost")
        connection = _connection_get(self)
        if connection is None:
            raise ValueError(f"{self!r} is a ghost without a connection")
        connection.load_state(self)
        _status_set(self, SAVED)
        assert _connection_get(self) is connection

    def _p_note_change(self) -> None:
        if _status_get(self) != UNSAVED:
            self._p_set_status_unsaved()
            connection = _connection_get(self)
            if connection is None:
                raise ValueError(f"{self!r} is stored but has no connection")
            connection.note_change(self)
        assert _status_get(self) == UNSAVED

    def _p_format_oid(self) -> str:
        oid = _oid_get(self)
        if oid is None:
            return "None"
        return str(str_to_int8(bytes(as_bytes(oid))))

    def _p_set_status_ghost(self) -> None:
        self.__setstate__({})
        _status_set(self, GHOST)
        untrack(self)
        assert type(self) in _real_by_twin, "a ghost must be an instance of its twin"

    def _p_set_status_saved(self) -> None:
        _status_set(self, SAVED)

    def _p_set_status_unsaved(self) -> None:
        if _status_get(self) == GHOST:
            self._p_load_state()
        _status_set(self, UNSAVED)

    def _p_is_ghost(self) -> bool:
        return _status_get(self) == GHOST

    def _p_is_unsaved(self) -> bool:
        return _status_get(self) == UNSAVED

    def _p_is_saved(self) -> bool:
        return _status_get(self) == SAVED

    def _p_gen_data_slots(self) -> Iterator[str]:
        for name, _descriptor in _data_slots(real_class(self)):
            if _hasattribute(self, name):
                yield name


class Persistent(PersistentObject):
    """The traditional persistent class: its state is its ``__dict__``."""

    def __getstate__(self) -> dict[str, Any]:
        if _status_get(self) == GHOST:
            self._p_load_state()
        state: dict[str, Any] = _getattribute(self, "__dict__")
        return state

    def __setstate__(self, state: Any) -> None:
        """Replace the ``__dict__`` contents by ``state``, interning str keys.

        Unpickled keys are fresh str objects; CPython's specialized attribute
        lookup in a materialized ``__dict__`` compares keys by identity, so an
        uninterned key would send every read of the attribute down the slow
        path. A value that is the very key object is replaced by the interned
        key too, so that a rewrite pickles it by reference as before.
        """
        if state is None:
            raise TypeError("the state of a Persistent instance must be a mapping, not None")
        instance_dict = _getattribute(self, "__dict__")
        instance_dict.clear()
        for key, value in state.items():
            if type(key) is str:
                interned = _intern(key)
                if value is key:
                    value = interned
                key = interned
            instance_dict[key] = value


class ComputedAttribute(PersistentObject):
    """A cached value that is never stored; invalidating it reaches other connections."""

    __slots__ = ("value",)

    def __getstate__(self) -> None:
        return None

    def _p_load_state(self) -> None:
        if _status_get(self) != GHOST:
            raise AssertionError(f"_p_load_state() on {self!r}, which is not a ghost")
        _status_set(self, SAVED)

    def get(self, compute: Callable[[], Any]) -> Any:
        """The cached value, computing (and caching, without noting a change) if absent."""
        if not _hasattribute(self, "value"):
            _setattribute(self, "value", compute())
        return _getattribute(self, "value")

    def invalidate(self) -> None:
        """Drop the cached value and note a change, so other connections drop theirs."""
        if _hasattribute(self, "value"):
            _delattribute(self, "value")
        self._p_note_change()


# Names Durus's module exposed from its imports; kept for compatibility.
_compat_reexports = (str_to_int8, iteritems, as_bytes, IS_PYPY, stderr)
